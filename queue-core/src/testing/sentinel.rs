//! A throwaway Sentinel deployment: a primary, its replicas and a quorum of Sentinels, each a
//! real process on a free loopback port, killed on drop. For testing failovers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, read_log, RedisServer, RedisServerOptions};
use crate::error::{Error, Result};

/// How to start a [`SentinelSet`].
#[derive(Debug, Clone)]
pub struct SentinelOptions {
    /// Options of every data server (the primary and the replicas); a replica adds
    /// `--replicaof`.
    pub server: RedisServerOptions,
    /// How many replicas (default 1).
    pub replicas: usize,
    /// How many Sentinels (default 3; the quorum is a majority).
    pub sentinels: usize,
    /// How long a server may not answer before a Sentinel thinks it down (default 1.5 s).
    pub down_after: Duration,
    /// The password the Sentinels log in to the data servers with (`auth-pass`), when the
    /// servers have one.
    pub auth_pass: Option<String>,
}

impl Default for SentinelOptions {
    fn default() -> SentinelOptions {
        SentinelOptions {
            server: RedisServerOptions::default(),
            replicas: 1,
            sentinels: 3,
            down_after: Duration::from_millis(1500),
            auth_pass: None,
        }
    }
}

/// The master name the Sentinels monitor.
pub const MASTER: &str = "queue-test";

/// How long a failover may take before the fixture gives up: detection, the Sentinels'
/// election (retried after a failed vote) and the promotion.
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);

/// A primary, its replicas and the Sentinels that watch them.
#[derive(Debug)]
pub struct SentinelSet {
    servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
    quorum: usize,
}

#[derive(Debug)]
struct SentinelProcess {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SentinelSet {
    /// Starts the servers, waits until every replica is in sync, then starts the Sentinels and
    /// waits until each knows the replicas and the other Sentinels (so a failover can be asked
    /// for at once).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when a process does not start or the deployment does not settle in
    /// time (with the logs).
    pub fn start(opts: SentinelOptions) -> Result<SentinelSet> {
        let primary = RedisServer::start_with(opts.server.clone())?;
        let primary_port = primary
            .port()
            .ok_or_else(|| spawn_err("a TCP server is needed"))?;
        let mut servers = vec![primary];
        for _ in 0..opts.replicas {
            let mut o = opts.server.clone();
            o.args
                .extend(["--replicaof", "127.0.0.1", &primary_port.to_string()].map(String::from));
            servers.push(RedisServer::start_with(o)?);
        }
        let mut set = SentinelSet {
            servers,
            sentinels: Vec::new(),
            quorum: opts.sentinels / 2 + 1,
        };
        for i in 1..set.servers.len() {
            set.wait(Duration::from_secs(30), "a replica in sync", |s| {
                info(&s.servers[i], "replication")
                    .is_some_and(|i| i.contains("master_link_status:up"))
            })?;
        }
        for _ in 0..opts.sentinels {
            let sentinel = start_sentinel(&opts, primary_port, set.quorum)?;
            set.sentinels.push(sentinel);
        }
        let (replicas, others) = (opts.replicas, opts.sentinels.saturating_sub(1));
        set.wait(
            Duration::from_secs(60),
            "every Sentinel knowing the replicas and the other Sentinels",
            |s| {
                s.sentinels.iter().all(|p| {
                    let known = |what: &str| {
                        sentinel_cmd(p.port, &["SENTINEL", what, MASTER])
                            .ok()
                            .and_then(|v| match v {
                                redis::Value::Array(items) => Some(items.len()),
                                _ => None,
                            })
                    };
                    known("REPLICAS") == Some(replicas) && known("SENTINELS") == Some(others)
                })
            },
        )?;
        Ok(set)
    }

    /// The URL that names this deployment: its Sentinels and master name (without the data
    /// servers' credentials).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The data servers: the first started as the primary.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The index of the server a majority of the Sentinels names as the primary, once it says
    /// it is one.
    pub fn primary(&self) -> Option<usize> {
        let mut votes = vec![0usize; self.servers.len()];
        for s in &self.sentinels {
            let Ok(addr) = sentinel_cmd(s.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
            else {
                continue;
            };
            let Ok((_, port)) = redis::from_redis_value::<(String, u16)>(addr) else {
                continue;
            };
            if let Some(i) = self.servers.iter().position(|r| r.port() == Some(port)) {
                votes[i] += 1;
            }
        }
        let i = votes.iter().position(|&v| v >= self.quorum)?;
        info(&self.servers[i], "replication")
            .is_some_and(|r| r.contains("role:master"))
            .then_some(i)
    }

    /// Asks a Sentinel for a failover (`SENTINEL FAILOVER`) and waits until another server is
    /// the primary. Returns its index.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when no new primary is in place in time.
    pub fn failover(&mut self) -> Result<usize> {
        let old = self
            .primary()
            .ok_or_else(|| spawn_err("no primary to fail over from"))?;
        let deadline = Instant::now() + FAILOVER_WITHIN;
        // A Sentinel refuses while a previous failover is settling (`INPROG`), or before it
        // has seen a replica it can promote: ask again until one accepts.
        'asked: loop {
            for s in &self.sentinels {
                if sentinel_cmd(s.port, &["SENTINEL", "FAILOVER", MASTER]).is_ok() {
                    break 'asked;
                }
            }
            if Instant::now() > deadline {
                return Err(spawn_err(format!(
                    "no Sentinel accepted SENTINEL FAILOVER; logs:\n{}",
                    self.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_until_new_primary(old, deadline)
    }

    /// Kills the primary (SIGKILL, as a crash) and waits until the Sentinels have promoted
    /// another server. The killed one stays down until [`SentinelSet::restart`]. Returns the
    /// indexes of the killed server and of the new primary.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when no new primary is in place in time.
    pub fn kill_primary(&mut self) -> Result<(usize, usize)> {
        let old = self
            .primary()
            .ok_or_else(|| spawn_err("no primary to kill"))?;
        self.kill(old);
        let new = self.wait_new_primary(old)?;
        Ok((old, new))
    }

    /// Kills server `i` (SIGKILL) and leaves it down.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts server `i` again after [`SentinelSet::kill`], with the arguments it first had
    /// (with an append-only file among them, with its data), and waits until it answers.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if it does not start.
    pub fn start_again(&mut self, i: usize) -> Result<()> {
        self.servers[i].start_again()
    }

    /// Starts server `i` again after [`SentinelSet::kill_primary`], empty and with the
    /// arguments it first had: the Sentinels turn it into a replica of the new primary. Waits
    /// until it is one, in sync.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if it does not start or does not become an in-sync replica in time.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.servers[i].start_again()?;
        self.wait(
            FAILOVER_WITHIN,
            "the restarted server as an in-sync replica",
            |s| {
                info(&s.servers[i], "replication").is_some_and(|r| {
                    r.contains("role:slave") && r.contains("master_link_status:up")
                })
            },
        )
    }

    /// Waits until a server other than `old` is the primary. Returns its index.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when no new primary is in place in time.
    pub fn wait_new_primary(&self, old: usize) -> Result<usize> {
        self.wait_until_new_primary(old, Instant::now() + FAILOVER_WITHIN)
    }

    fn wait_until_new_primary(&self, old: usize, deadline: Instant) -> Result<usize> {
        loop {
            if let Some(new) = self.primary().filter(|&p| p != old) {
                return Ok(new);
            }
            if Instant::now() > deadline {
                return Err(spawn_err(format!(
                    "no new primary within {FAILOVER_WITHIN:?}; logs:\n{}",
                    self.logs()
                )));
            }
            // Only polling shows the Sentinels' state; the wait is bounded.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&SentinelSet) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        while !cond(self) {
            if Instant::now() > deadline {
                return Err(spawn_err(format!(
                    "no {what} within {within:?}; logs:\n{}",
                    self.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The Sentinels' logs and the servers', for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.sentinels.iter().enumerate() {
            let log = read_log(&s.dir.path().join("sentinel.log"));
            out.push_str(&format!("--- sentinel {i} (port {}):\n{log}\n", s.port));
        }
        for (i, s) in self.servers.iter().enumerate() {
            out.push_str(&format!("--- server {i} ({}):\n{}\n", s.url(), s.log()));
        }
        out
    }
}

fn spawn_err(message: impl Into<String>) -> Error {
    Error::Spawn {
        what: "redis-sentinel",
        message: message.into(),
    }
}

fn start_sentinel(
    opts: &SentinelOptions,
    primary_port: u16,
    quorum: usize,
) -> Result<SentinelProcess> {
    let dir = tempfile::Builder::new()
        .prefix("queue-sentinel-")
        .tempdir()
        .map_err(|e| spawn_err(format!("temp dir: {e}")))?;
    let port = free_port().map_err(|e| spawn_err(format!("no free port: {e}")))?;
    let ms = opts.down_after.as_millis();
    let mut conf = format!(
        "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
         sentinel monitor {MASTER} 127.0.0.1 {primary_port} {quorum}\n\
         sentinel down-after-milliseconds {MASTER} {ms}\n\
         sentinel failover-timeout {MASTER} {failover}\n\
         sentinel parallel-syncs {MASTER} 1\n",
        dir = dir.path().display(),
        log = dir.path().join("sentinel.log").display(),
        // After a vote that elected no leader, the Sentinels try again only after twice this:
        // short, so a split vote costs seconds, not minutes (the default is 3 minutes).
        failover = (ms * 4 / 3).max(2000),
    );
    if let Some(pass) = &opts.auth_pass {
        conf.push_str(&format!("sentinel auth-pass {MASTER} {pass}\n"));
    }
    let path = dir.path().join("sentinel.conf");
    std::fs::write(&path, conf).map_err(|e| spawn_err(format!("sentinel.conf: {e}")))?;
    let child = spawn_sentinel(&path)?;
    let mut sentinel = SentinelProcess { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while sentinel_cmd(port, &["PING"]).is_err() {
        if let Ok(Some(status)) = sentinel.child.try_wait() {
            return Err(spawn_err(format!(
                "the Sentinel exited with {status}; log: {}",
                read_log(&sentinel.dir.path().join("sentinel.log"))
            )));
        }
        if Instant::now() > deadline {
            return Err(spawn_err("the Sentinel did not answer PING within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(sentinel)
}

/// `redis-sentinel` when installed (Debian's package), else `redis-server --sentinel`: the
/// same program in Sentinel mode.
fn spawn_sentinel(conf: &std::path::Path) -> Result<Child> {
    let server = std::env::var_os("REDIS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"));
    let run = |program: &std::path::Path, extra: &[&str]| {
        Command::new(program)
            .arg(conf)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    run(std::path::Path::new("redis-sentinel"), &[])
        .or_else(|_| run(&server, &["--sentinel"]))
        .map_err(|e| {
            spawn_err(format!(
                "neither redis-sentinel nor {} --sentinel runs: {e} (apt-get install redis-sentinel)",
                server.display()
            ))
        })
}

/// One command to the Sentinel on `port`, with short timeouts.
fn sentinel_cmd(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con)
}

/// `INFO section` of `server`, as its administrator; `None` when it does not answer.
fn info(server: &RedisServer, section: &str) -> Option<String> {
    let client = redis::Client::open(server.admin_url()).ok()?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    redis::cmd("INFO").arg(section).query(&mut con).ok()
}
