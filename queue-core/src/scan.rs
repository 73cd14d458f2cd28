//! The one SCAN loop: every walk over keys (`SCAN`) or over a collection's members (`ZSCAN`,
//! `SSCAN`, `HSCAN`) goes through [`Scan`], so none blocks the server and each pattern comes
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
pub struct Scan {
    command: &'static str,
    key: Option<String>,
    pattern: String,
    count: usize,
    cursor: Option<u64>,
}

impl Scan {
    /// Keys matching `pattern` (a glob whose user parts are escaped).
    pub fn keys(pattern: String) -> Scan {
        Scan::new("SCAN", None, pattern)
    }

    /// Members of the sorted set `key` matching `pattern`, as (member, score) pairs.
    pub fn zset(key: String, pattern: String) -> Scan {
        Scan::new("ZSCAN", Some(key), pattern)
    }

    /// Members of the set `key` matching `pattern`.
    pub fn set(key: String, pattern: String) -> Scan {
        Scan::new("SSCAN", Some(key), pattern)
    }

    fn new(command: &'static str, key: Option<String>, pattern: String) -> Scan {
        Scan {
            command,
            key,
            pattern,
            count: 1000,
            cursor: Some(0),
        }
    }

    /// How many entries the server looks at per call (a hint; default 1,000).
    pub fn count(mut self, count: usize) -> Scan {
        self.count = count.max(1);
        self
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
    pub async fn next<T: FromRedisValue, C: ConnectionLike + Send>(
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
            .arg("COUNT")
            .arg(self.count);
        let (next, batch): (u64, Vec<T>) = cmd.query_async(con).await?;
        self.cursor = (next != 0).then_some(next);
        Ok(Some(batch))
    }
}
