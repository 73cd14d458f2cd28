//! A throwaway `redis-server` process: the quickstart's embedded default, the test fixture and
//! the benchmark's target. It lives in a temporary directory, listens on a free loopback port
//! (or a unix socket) and is killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

mod cluster;
mod sentinel;
pub use cluster::{ClusterOptions, Failover, RedisCluster};
pub use sentinel::{SentinelOptions, SentinelSet, MASTER as SENTINEL_MASTER};

/// A `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    port: Option<u16>,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    tls: Option<crate::TlsFiles>,
    password: Option<String>,
}

/// How to start a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerOptions {
    /// Listen on a unix socket instead of a TCP port.
    pub unix_socket: bool,
    /// Extra `redis-server` arguments (`["--maxmemory", "100mb"]`).
    pub args: Vec<String>,
    /// Program to run (default `redis-server` from `PATH`, or `REDIS_SERVER_BIN`).
    pub program: Option<PathBuf>,
    /// Listen with TLS only (`rediss://`): certificates made with `openssl` in the server's
    /// directory, a CA of its own that signs the server's (for 127.0.0.1) and a client's; the
    /// server accepts clients with or without a certificate. [`RedisServer::tls_files`] names
    /// them for a client.
    pub tls: bool,
    /// A password for the `default` user (`--requirepass`): [`RedisServer::url`] then names a
    /// server that refuses strangers, [`RedisServer::admin_url`] one that lets its
    /// administrator in, and the start and restart waits log in to see the server ready (a
    /// server refuses a stranger before it has loaded its data).
    pub password: Option<String>,
}

impl RedisServerOptions {
    /// Adds the ACL user `name` with `password` and `rules` (`ACL SETUSER` rule words) as
    /// start-up arguments, so the user survives the server's restarts.
    pub fn user(mut self, name: &str, password: &str, rules: &str) -> RedisServerOptions {
        self.args.extend(
            ["--user", name, "reset", "on", &format!(">{password}")]
                .into_iter()
                .map(String::from),
        );
        self.args.extend(rules.split_whitespace().map(String::from));
        self
    }
}

/// The longest a restarted server may take to answer PING (see [`RedisServer::restart_after`]).
const RESTART_READY: Duration = Duration::from_secs(120);

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when `redis-server` is not installed or does not come up in time
    /// (its log is included).
    pub fn start() -> Result<RedisServer> {
        RedisServer::start_with(RedisServerOptions::default())
    }

    /// Starts a server with options.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(opts: RedisServerOptions) -> Result<RedisServer> {
        // Binding port 0 asks the OS for a free port; another process could take it between our
        // release and redis-server's bind, so a failed start is retried with a new port.
        let mut last = None;
        for _ in 0..3 {
            match RedisServer::start_once(&opts) {
                Ok(server) => return Ok(server),
                Err(e @ Error::Spawn { .. }) if !opts.unix_socket => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Spawn {
            what: "redis-server",
            message: "did not start".into(),
        }))
    }

    fn start_once(opts: &RedisServerOptions) -> Result<RedisServer> {
        let spawn_err = |message: String| Error::Spawn {
            what: "redis-server",
            message,
        };
        let dir = tempfile::Builder::new()
            .prefix("queue-redis-")
            .tempdir()
            .map_err(|e| spawn_err(format!("temp dir: {e}")))?;
        let program = opts
            .program
            .clone()
            .or_else(|| std::env::var_os("REDIS_SERVER_BIN").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let (listen, url, port) = if opts.unix_socket {
            let sock = dir.path().join("redis.sock");
            let url = format!("redis+unix://{}", sock.display());
            (
                vec![
                    "--port".into(),
                    "0".into(),
                    "--unixsocket".into(),
                    sock.display().to_string(),
                ],
                url,
                None,
            )
        } else if opts.tls {
            let port = free_port().map_err(|e| spawn_err(format!("no free port: {e}")))?;
            let d = dir.path();
            make_certificates(d).map_err(|e| spawn_err(format!("certificates: {e}")))?;
            let file = |name: &str| d.join(name).display().to_string();
            (
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--tls-cert-file".into(),
                    file("server.crt"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.crt"),
                    "--tls-auth-clients".into(),
                    "optional".into(),
                ],
                format!("rediss://127.0.0.1:{port}"),
                Some(port),
            )
        } else {
            let port = free_port().map_err(|e| spawn_err(format!("no free port: {e}")))?;
            let url = format!("redis://127.0.0.1:{port}");
            (
                vec![
                    "--port".into(),
                    port.to_string(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                ],
                url,
                Some(port),
            )
        };
        let tls = opts.tls.then(|| crate::TlsFiles {
            ca_file: Some(dir.path().join("ca.crt")),
            cert_file: Some(dir.path().join("client.crt")),
            key_file: Some(dir.path().join("client.key")),
        });
        let mut args: Vec<std::ffi::OsString> = listen.iter().map(Into::into).collect();
        for a in [
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
        ] {
            args.push(a.into());
        }
        args.push(dir.path().into());
        args.push("--logfile".into());
        args.push(dir.path().join("redis.log").into());
        if let Some(password) = &opts.password {
            args.push("--requirepass".into());
            args.push(password.into());
        }
        args.extend(opts.args.iter().map(Into::into));
        let child = spawn(&program, &args)?;
        // From here on, Drop kills the child whatever happens.
        let mut server = RedisServer {
            child,
            dir,
            url,
            port,
            program,
            args,
            tls,
            password: opts.password.clone(),
        };
        server
            .wait_ready(Duration::from_secs(10))
            .map_err(|m| spawn_err(format!("{m}; log: {}", server.log())))?;
        Ok(server)
    }

    fn wait_ready(&mut self, within: Duration) -> std::result::Result<(), String> {
        let deadline = Instant::now() + within;
        let url = self.admin_url();
        let client = match &self.tls {
            None => redis::Client::open(url.as_str()).map_err(|e| e.to_string())?,
            Some(files) => {
                let mut config = crate::ClientConfig::new(url);
                // With the client's certificate: a server may require one.
                config.tls = files.clone();
                crate::engine::client::open_redis(&config).map_err(|e| e.to_string())?
            }
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                match redis::cmd("PING").query::<String>(&mut con) {
                    Ok(_) => return Ok(()),
                    // A server started with `--requirepass` among its arguments (not with
                    // `password`) answers, just not to strangers: it is up.
                    Err(e) if crate::ErrorKind::of_redis(&e) == crate::ErrorKind::Auth => {
                        return Ok(())
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING within {within:?}"
                ));
            }
            // Polling is the only signal a starting server gives; the wait is bounded above.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server (SIGKILL: nothing is saved, as after a crash) and starts it again on the
    /// same address, empty. For testing what survives a Redis restart.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if it does not come back.
    pub fn restart(&mut self) -> Result<()> {
        self.restart_after(Duration::ZERO)
    }

    /// Like [`RedisServer::restart`], with the server down for `down` in between (an outage of
    /// that length; with `--appendonly yes` it comes back with its data).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if it does not come back.
    pub fn restart_after(&mut self, down: Duration) -> Result<()> {
        self.kill();
        std::thread::sleep(down);
        self.start_again()
    }

    /// Kills the server (SIGKILL: nothing is saved, as after a crash) and leaves it down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a server [`RedisServer::kill`]ed before on the same address with the same
    /// arguments, and waits until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if it does not come back.
    pub fn start_again(&mut self) -> Result<()> {
        self.child = spawn(&self.program, &self.args)?;
        // A server with a long append-only file replays it before it answers (on a busy
        // machine, minutes of `appendfsync always` writes take well over 10 s): the wait is
        // bounded, but by what a replay can take, not by a fresh start.
        self.wait_ready(RESTART_READY).map_err(|m| Error::Spawn {
            what: "redis-server",
            message: format!("{m}; log: {}", self.log()),
        })
    }

    /// The certificates of a TLS server ([`RedisServerOptions::tls`]): its CA, and a client
    /// certificate and key it accepts.
    pub fn tls_files(&self) -> Option<&crate::TlsFiles> {
        self.tls.as_ref()
    }

    /// The URL to connect to (without credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as the `default` user with [`RedisServerOptions::password`] (the plain URL
    /// when it has none).
    pub fn admin_url(&self) -> String {
        match &self.password {
            Some(password) => with_credentials(&self.url, "default", password),
            None => self.url.clone(),
        }
    }

    /// The `default` user's password, when it has one.
    pub(crate) fn admin_password(&self) -> Option<String> {
        self.password.clone()
    }

    /// The TCP port, if not on a unix socket.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("redis.log"))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `url` (`redis://`, `rediss://` or `redis+unix://`) with a user name and a password.
pub fn with_credentials(url: &str, user: &str, password: &str) -> String {
    if url.starts_with("redis+unix://") {
        format!("{url}?user={user}&pass={password}")
    } else {
        url.replacen("://", &format!("://{user}:{password}@"), 1)
    }
}

fn spawn(program: &std::path::Path, args: &[std::ffi::OsString]) -> Result<Child> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Spawn {
            what: "redis-server",
            message: format!(
                "{}: {e} (install it: `apt-get install redis-server`, or set REDIS_URL)",
                program.display()
            ),
        })
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA,
/// written as PEM files into `dir` (`ca.crt`, `server.crt`/`.key`, `client.crt`/`.key`).
fn make_certificates(dir: &std::path::Path) -> std::result::Result<(), String> {
    let openssl = |args: &[&str]| -> std::result::Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!("openssl is needed for TLS tests (apt-get install openssl): {e}")
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    // Extensions make both X.509 v3 certificates (rustls refuses v1).
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .map_err(|e| e.to_string())?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=queue test CA",
    ])?;
    for name in ["server", "client"] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ])?;
        let ext = format!("{name}.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ])?;
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<no log: {e}>"))
}
