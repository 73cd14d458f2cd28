//! How Lua scripts are declared and called. Each module keeps its scripts beside its code
//! (`engine/scripts/`, `toolkit/rate_limit/*.lua`, ...) and declares them with [`scripts!`]; one
//! script per state change, each with its KEYS/ARGV contract in its header. `prelude.lua` is
//! put in front of every one.
//!
//! Scripts run with EVALSHA; when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH) the
//! script is loaded and the call retried once, so callers never see the cache.

use redis::{FromRedisValue, ToRedisArgs};

use crate::error::{Error, Result};

/// The prelude every script starts with (shared helpers: clock, member layout, wake-up, events).
const PRELUDE: &str = include_str!("prelude.lua");

/// A Lua script with the shared prelude in front.
#[derive(Debug)]
pub(crate) struct Script {
    name: &'static str,
    inner: redis::Script,
}

impl Script {
    /// The script made of the prelude and `parts`, in order.
    pub(crate) fn new(name: &'static str, parts: &[&str]) -> Script {
        let mut source = String::from(PRELUDE);
        for part in parts {
            source.push_str(part);
        }
        Script {
            name,
            inner: redis::Script::new(&source),
        }
    }
}

/// Declares the scripts of one module: a struct with one [`Script`] per entry and a function
/// that builds them once. Each entry names the `.lua` files it is made of, relative to the file
/// that invokes the macro, so a module's scripts sit beside its code.
macro_rules! scripts {
    ($(#[$meta:meta])* $vis:vis fn $getter:ident() -> $name:ident {
        $($ident:ident => [$($file:literal),+]),* $(,)?
    }) => {
        #[derive(Debug)]
        $vis struct $name { $( pub(crate) $ident: $crate::script::Script, )* }

        impl $name {
            /// All scripts, to load them up front.
            #[allow(dead_code)]
            pub(crate) fn all(&self) -> Vec<&$crate::script::Script> {
                vec![$( &self.$ident, )*]
            }
        }

        $(#[$meta])*
        $vis fn $getter() -> &'static $name {
            static SCRIPTS: std::sync::OnceLock<$name> = std::sync::OnceLock::new();
            SCRIPTS.get_or_init(|| $name {
                $( $ident: $crate::script::Script::new(stringify!($ident), &[$(include_str!($file)),+]), )*
            })
        }
    };
}
pub(crate) use scripts;

/// One call of a script: its keys and arguments.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    script: &'a Script,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Script {
    pub(crate) fn call(&self) -> Call<'_> {
        Call {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Loads the script into the server's script cache.
    pub(crate) async fn load<C: redis::aio::ConnectionLike + Send>(
        &self,
        con: &mut C,
        url: &str,
    ) -> Result<()> {
        self.inner
            .prepare_invoke()
            .load_async(con)
            .await
            .map_err(Error::redis(url))?;
        Ok(())
    }
}

impl<'a> Call<'a> {
    pub(crate) fn key(&mut self, key: String) -> &mut Self {
        self.keys.push(key);
        self
    }

    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        for a in arg.to_redis_args() {
            self.args.push(a);
        }
        self
    }

    /// Whether every key of the call hashes to one Redis Cluster slot, as a script's keys
    /// must on a cluster. Checked on every call in debug builds, so the test suite checks
    /// every call it makes.
    fn single_slot(&self) -> bool {
        let mut slots = self
            .keys
            .iter()
            .map(|k| crate::keys::hash_slot(k.as_bytes()));
        match slots.next() {
            None => true,
            Some(first) => slots.all(|s| s == first),
        }
    }

    fn cmd(&self) -> redis::Cmd {
        debug_assert!(
            self.single_slot(),
            "script {} is given keys in more than one cluster slot: {:?}",
            self.script.name,
            self.keys
        );
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.inner.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Runs the call.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] when the connection fails, [`Error::Redis`] when the server or
    /// the script refuses (a script's own refusal has kind [`crate::ErrorKind::Script`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once sent, the script runs to completion on the server even if this
    /// future is dropped; callers must treat a dropped call as "may have happened".
    pub(crate) async fn invoke<T: FromRedisValue, C: redis::aio::ConnectionLike + Send>(
        &self,
        con: &mut C,
        url: &str,
    ) -> Result<T> {
        match self.cmd().query_async(con).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load(con, url).await?;
                self.cmd()
                    .query_async(con)
                    .await
                    .map_err(|e| self.error(url, e))
            }
            Err(e) => Err(self.error(url, e)),
        }
    }

    /// Runs the call, then waits on the same connection (one pipeline, so no reconnect can
    /// come between) until the write is as durable as `durability` asks: WAIT for replicas,
    /// WAITAOF for an fsync. Nothing to wait for with [`Durability::Server`].
    ///
    /// # Errors
    ///
    /// As [`Call::invoke`]; [`Error::NotDurable`] when the write was applied but fewer copies
    /// than asked confirmed it within the timeout.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Call::invoke`].
    pub(crate) async fn invoke_durable<T: FromRedisValue, C: redis::aio::ConnectionLike + Send>(
        &self,
        con: &mut C,
        url: &str,
        durability: Durability,
    ) -> Result<T> {
        let (value, durable) = self.invoke_then_wait(con, url, durability).await?;
        durable.map(|()| value)
    }

    /// As [`Call::invoke_durable`], but hands back the script's reply also when the wait
    /// fell short: the write was applied, and the caller may need to know what it did.
    ///
    /// # Errors
    ///
    /// As [`Call::invoke`]; the inner result is [`Error::NotDurable`] when fewer copies than
    /// asked confirmed the write.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Call::invoke`].
    pub(crate) async fn invoke_then_wait<
        T: FromRedisValue,
        C: redis::aio::ConnectionLike + Send,
    >(
        &self,
        con: &mut C,
        url: &str,
        durability: Durability,
    ) -> Result<(T, Result<()>)> {
        let Some(wait) = durability.command() else {
            return Ok((self.invoke(con, url).await?, Ok(())));
        };
        let pipeline = || {
            let mut p = redis::pipe();
            p.add_command(self.cmd()).add_command(wait.clone());
            p
        };
        let reply: redis::RedisResult<(T, redis::Value)> = pipeline().query_async(con).await;
        let (value, acks) = match reply {
            Ok(v) => v,
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load(con, url).await?;
                pipeline()
                    .query_async(con)
                    .await
                    .map_err(|e| self.error(url, e))?
            }
            Err(e) => return Err(self.error(url, e)),
        };
        Ok((value, durability.check(acks)))
    }

    fn error(&self, url: &str, e: redis::RedisError) -> Error {
        Error::from_redis(url, &format!("script {}", self.script.name), e)
    }
}

/// How durable a write must be before the queue acknowledges it (an enqueue, a completion, a
/// failure). Redis acknowledges a write once it applied it in memory; what survives a crash
/// then depends on its persistence settings and on replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// As durable as the server's own persistence: with `appendfsync always` nothing
    /// acknowledged is lost when Redis dies; with `everysec` up to a second; without
    /// persistence, everything since the last snapshot. One round trip, no wait.
    #[default]
    Server,
    /// Acknowledged once `replicas` replicas have the write (`WAIT`), so it survives the loss
    /// of the primary when one of them is promoted. Fails with [`Error::NotDurable`] after
    /// `timeout` (the write itself stays applied on the primary).
    Replicated {
        /// How many replicas must confirm.
        replicas: u32,
        /// How long to wait for them.
        timeout: std::time::Duration,
    },
    /// Acknowledged once the server's append-only file has the write on disk, and `replicas`
    /// replicas' too (`WAITAOF`, Redis 7.2 or later: refused at connect on older servers).
    Fsync {
        /// How many replicas must also have fsynced it (0: the primary alone).
        replicas: u32,
        /// How long to wait.
        timeout: std::time::Duration,
    },
}

impl Durability {
    fn command(self) -> Option<redis::Cmd> {
        match self {
            Durability::Server => None,
            Durability::Replicated { replicas, timeout } => {
                let mut c = redis::cmd("WAIT");
                c.arg(replicas).arg(timeout_ms(timeout));
                Some(c)
            }
            Durability::Fsync { replicas, timeout } => {
                let mut c = redis::cmd("WAITAOF");
                c.arg(1).arg(replicas).arg(timeout_ms(timeout));
                Some(c)
            }
        }
    }

    fn check(self, acks: redis::Value) -> Result<()> {
        let wanted = match self {
            Durability::Server => return Ok(()),
            Durability::Replicated { replicas, .. } | Durability::Fsync { replicas, .. } => {
                replicas
            }
        };
        let (local, replicas): (u32, u32) = match (self, acks) {
            (Durability::Fsync { .. }, v) => {
                let (l, r): (u32, u32) = redis::FromRedisValue::from_redis_value(v)
                    .map_err(|e| Error::decode("WAITAOF reply", e))?;
                (l, r)
            }
            (_, v) => {
                let r: u32 = redis::FromRedisValue::from_redis_value(v)
                    .map_err(|e| Error::decode("WAIT reply", e))?;
                (1, r)
            }
        };
        if local < 1 || replicas < wanted {
            return Err(Error::NotDurable {
                wanted,
                confirmed: replicas,
                local: local >= 1,
            });
        }
        Ok(())
    }
}

/// A wait of zero means "forever" to WAIT: never ask for that by accident.
fn timeout_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_knows_whether_its_keys_share_a_slot() {
        let script = Script::new("probe", &["return 1"]);
        let mut call = script.call();
        assert!(call.single_slot(), "no keys");
        call.key("ns:{emails}:pending".to_string())
            .key("ns:{emails}:active".to_string());
        assert!(call.single_slot());
        // `foo` and `bar` are in slots 12182 and 5061.
        call.key("foo".to_string()).key("bar".to_string());
        assert!(!call.single_slot());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "more than one cluster slot")]
    fn a_call_across_slots_is_refused_in_debug_builds() {
        let script = Script::new("probe", &["return 1"]);
        let mut call = script.call();
        call.key("foo".to_string()).key("bar".to_string());
        let _ = call.cmd();
    }
}
