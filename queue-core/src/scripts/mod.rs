//! One Lua script per state change, each with its KEYS/ARGV contract in its header:
//! `job/` decides a job's life (enqueue, fetch, complete, fail, reclaim, extend, requeue,
//! watch), `admin/` holds the operator actions, `cron/`, `rate/`, `session/` and `cache/` the
//! toolkit; `prelude.lua` is prepended to every one.
//!
//! Scripts run with EVALSHA; when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH) the
//! script is loaded and the call retried once, so callers never see the cache.

use redis::{FromRedisValue, ToRedisArgs};

use crate::error::{Error, Result};

/// A Lua script with the shared prelude in front.
#[derive(Debug)]
pub(crate) struct Script {
    name: &'static str,
    inner: redis::Script,
}

macro_rules! scripts {
    ($($ident:ident => [$($file:literal),+]),* $(,)?) => {
        /// Every script of the engine.
        #[derive(Debug)]
        pub(crate) struct Scripts { $( pub(crate) $ident: Script, )* }

        impl Scripts {
            fn new() -> Scripts {
                Scripts { $( $ident: Script {
                    name: stringify!($ident),
                    inner: redis::Script::new(concat!(include_str!("prelude.lua"), $(include_str!($file)),+)),
                }, )* }
            }

            /// All scripts, to load them up front.
            pub(crate) fn all(&self) -> Vec<&Script> {
                vec![$( &self.$ident, )*]
            }
        }
    };
}

scripts! {
    enqueue => ["job/enqueue.lua"],
    fetch => ["job/fetch.lua"],
    complete => ["job/complete.lua"],
    fail => ["job/fail.lua"],
    reclaim => ["job/reclaim.lua"],
    extend => ["job/extend.lua"],
    requeue => ["job/requeue.lua"],
    watch => ["job/watch.lua"],
    replay => ["admin/replay.lua"],
    locate => ["admin/locate.lua"],
    delete => ["admin/delete.lua"],
    promote => ["admin/promote.lua"],
    purge => ["admin/purge.lua"],
    cron_fire => ["cron/fire.lua"],
    trim => ["admin/trim.lua"],
    // The algorithms are files of their own, assembled into the one script that checks every
    // limit of a request atomically.
    rate_limit => ["rate/sliding_log.lua", "rate/sliding_counter.lua", "rate/gcra.lua", "rate/check.lua"],
    rate_block => ["rate/block.lua"],
    session_create => ["session/create.lua"],
    session_get => ["session/get.lua"],
    session_write => ["session/write.lua"],
    session_rotate => ["session/rotate.lua"],
    session_destroy => ["session/destroy.lua"],
    cache_unlock => ["cache/unlock.lua"],
}

/// The scripts, compiled into the binary once.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

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

    fn cmd(&self) -> redis::Cmd {
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
    /// [`Error::Unreachable`] when the connection fails, [`Error::Redis`] when the script
    /// reports an error (its message starts with `queue:`).
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

    fn error(&self, url: &str, e: redis::RedisError) -> Error {
        match Error::from_redis(url, e) {
            Error::Redis(m) => Error::Redis(format!("script {}: {m}", self.script.name)),
            other => other,
        }
    }
}
