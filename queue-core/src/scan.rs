//! The one SCAN loop: every walk over keys (`SCAN`) or over a sorted set's members (`ZSCAN`)
//! goes through [`Scan`], so none blocks the server and each pattern comes
//! from `keys.rs`, escaped there.

use redis::FromRedisValue;

use crate::endpoint::Target;
use crate::engine::client::Con;

/// A cursor over keys matching a pattern, or over the members of one collection.
///
/// On a cluster, a walk over keys goes to the master of the one slot its keys share, or to
/// every master in turn (SCAN walks one node's keys).
///
/// ```ignore
/// let mut scan = Scan::keys(pattern);
/// while let Some(batch) = scan.next::<String>(&mut con).await? { ... }
/// ```
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    command: &'static str,
    key: Option<String>,
    pattern: String,
    cursor: Option<u64>,
    /// Where the keys are: one slot, or anywhere (every master).
    slot: Option<u16>,
    /// On a cluster, walking every master: the ones still to walk, the current one last.
    masters: Option<Vec<(String, u16)>>,
}

impl Scan {
    /// Keys matching `pattern` (a glob whose user parts are escaped), anywhere.
    #[cfg_attr(not(feature = "sessions"), allow(dead_code))]
    pub(crate) fn keys(pattern: String) -> Scan {
        Scan::new("SCAN", None, pattern, None)
    }

    /// Keys matching `pattern` that all share the slot of `key` (a queue's keys, say).
    pub(crate) fn keys_beside(key: &str, pattern: String) -> Scan {
        let slot = crate::keys::hash_slot(key.as_bytes());
        Scan::new("SCAN", None, pattern, Some(slot))
    }

    /// Members of the sorted set `key` matching `pattern`, as (member, score) pairs.
    pub(crate) fn zset(key: String, pattern: String) -> Scan {
        Scan::new("ZSCAN", Some(key), pattern, None)
    }

    fn new(command: &'static str, key: Option<String>, pattern: String, slot: Option<u16>) -> Scan {
        Scan {
            command,
            key,
            pattern,
            cursor: Some(0),
            slot,
            masters: None,
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
    pub(crate) async fn next<T: FromRedisValue>(
        &mut self,
        con: &mut Con,
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
        let target = match (&self.key, self.slot) {
            // A keyed walk goes where its key is, as any keyed command.
            (Some(_), _) => None,
            (None, Some(slot)) => Some(Target::Slot(slot)),
            (None, None) => {
                if self.masters.is_none() {
                    // `None` on one server: SCAN walks it all.
                    self.masters = con.masters().await?;
                }
                match self.masters.as_ref().and_then(|m| m.last()) {
                    Some((host, port)) => Some(Target::Node(host.clone(), *port)),
                    None if self.masters.is_some() => return Ok(None),
                    None => None,
                }
            }
        };
        let (next, batch): (u64, Vec<T>) = match &target {
            Some(target) => con.query_at(&cmd, target).await?,
            None => cmd.query_async(con).await?,
        };
        self.cursor = (next != 0).then_some(next);
        // On a cluster, one master walked: on to the next.
        if self.cursor.is_none() {
            if let Some(masters) = self.masters.as_mut() {
                masters.pop();
                if !masters.is_empty() {
                    self.cursor = Some(0);
                }
            }
        }
        Ok(Some(batch))
    }
}
