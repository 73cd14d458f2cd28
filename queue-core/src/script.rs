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

    fn error(&self, url: &str, e: redis::RedisError) -> Error {
        Error::from_redis(url, &format!("script {}", self.script.name), e)
    }
}
