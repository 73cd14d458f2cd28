//! The one SCAN loop: every walk over keys (`SCAN`) or over a sorted set's members (`ZSCAN`)
//! goes through [`Scan`], so none blocks the server and each pattern comes
//! from `keys.rs`, escaped there.

use redis::aio::ConnectionLike;
use redis::FromRedisValue;

/// A cursor over keys matching a pattern, or over the members of one collection.
///
/// ```ignore
/// let mut scan = Scan::keys(pattern);
/// while let Some(batch) = scan.next::<String, _>(&mut con).await? { ... }
/// ```
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    command: &'static str,
    key: Option<String>,
    pattern: String,
    cursor: Option<u64>,
}

impl Scan {
    /// Keys matching `pattern` (a glob whose user parts are escaped).
    pub(crate) fn keys(pattern: String) -> Scan {
        Scan::new("SCAN", None, pattern)
    }

    /// Members of the sorted set `key` matching `pattern`, as (member, score) pairs.
    pub(crate) fn zset(key: String, pattern: String) -> Scan {
        Scan::new("ZSCAN", Some(key), pattern)
    }

    fn new(command: &'static str, key: Option<String>, pattern: String) -> Scan {
        Scan {
            command,
            key,
            pattern,
            cursor: Some(0),
        }
    }

    /// The next batch (possibly empty), or `None` once the walk is complete.
    ///
    /// # Errors
    ///
    /// The connection's error, classified by the caller.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves the cursor where it was, and SCAN tolerates repeats.
    pub(crate) async fn next<T: FromRedisValue, C: ConnectionLike + Send>(
        &mut self,
        con: &mut C,
    ) -> redis::RedisResult<Option<Vec<T>>> {
        let Some(cursor) = self.cursor else {
            return Ok(None);
        };
        let mut cmd = redis::cmd(self.command);
        if let Some(key) = &self.key {
            cmd.arg(key);
        }
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            // Enough entries per call to keep round trips few, few enough to keep each short.
            .arg("COUNT")
            .arg(1000);
        let (next, batch): (u64, Vec<T>) = cmd.query_async(con).await?;
        self.cursor = (next != 0).then_some(next);
        Ok(Some(batch))
    }
}
