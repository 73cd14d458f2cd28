//! The real-server test fixture: every test gets its own `redis-server` (free loopback port,
//! temp dir, killed on drop) and a client on it. Never the machine's shared 6379.
#![allow(dead_code)]

pub mod proxy;

use std::future::Future;
use std::time::{Duration, Instant};

use queue::testing::RedisServer;
use queue::Client;

pub struct Env {
    pub server: RedisServer,
    pub client: Client,
}

impl Env {
    pub async fn start() -> Env {
        init_tracing();
        let server = RedisServer::start()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let client = Client::connect(server.url())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}\nlog:\n{}", server.log()));
        Env { server, client }
    }

    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.server.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Creates the ACL user `name` (password `<name>-pw`) with `rules` (each string split on
    /// whitespace) and returns the server's URL as that user.
    pub async fn user(&self, name: &str, rules: &[&str]) -> String {
        let mut args: Vec<String> = vec![
            "SETUSER".into(),
            name.into(),
            "reset".into(),
            "on".into(),
            format!(">{name}-pw"),
        ];
        for r in rules {
            args.extend(r.split_whitespace().map(String::from));
        }
        redis::cmd("ACL")
            .arg(&args)
            .query_async::<()>(&mut self.raw().await)
            .await
            .unwrap_or_else(|e| panic!("ACL {args:?}: {e}"));
        self.url()
            .replacen("redis://", &format!("redis://{name}:{name}-pw@"), 1)
    }
}

/// A server that survives its restarts with everything it acknowledged: append-only file,
/// `appendfsync always`.
pub fn aof_server() -> RedisServer {
    RedisServer::start_with(queue::testing::RedisServerOptions {
        args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .expect("redis-server")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Waits for `cond` to hold, checking every 10 ms, for at most `within`. For conditions that
/// have no signal to await (state in Redis changed by another process); the wait is bounded.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `f` with a hard time limit so a broken test fails instead of hanging CI.
pub async fn bounded<T>(within: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {within:?}"))
}

/// A worker running in the test process.
pub struct RunningWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<queue::worker::Report, queue::worker::Error>>,
}

impl RunningWorker {
    /// Shuts the worker down gracefully and returns its report (bounded).
    pub async fn stop(mut self) -> queue::worker::Report {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        bounded(Duration::from_secs(30), "worker shutdown", self.handle)
            .await
            .expect("join")
            .expect("run")
    }
}

/// The registry of a test worker: exactly the handlers its scenario names. Test binaries link
/// many handlers (and the worker binary deliberately two with one name), so no test worker
/// relies on `Registry::discover`.
pub fn registry(jobs: &[&str]) -> queue::worker::Registry {
    queue::worker::Registry::with_jobs(jobs).unwrap_or_else(|e| panic!("registry of {jobs:?}: {e}"))
}

/// Builds a worker on `client` running the handlers named in `jobs`, as `configure` says, and
/// runs it until [`RunningWorker::stop`].
pub async fn start_worker(
    client: &Client,
    jobs: &[&str],
    configure: impl FnOnce(queue::WorkerBuilder) -> queue::WorkerBuilder,
) -> RunningWorker {
    let builder = queue::WorkerBuilder::with_client(client.clone()).registry(registry(jobs));
    let worker = configure(builder).build().await.expect("build worker");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    RunningWorker {
        stop: Some(tx),
        handle,
    }
}

/// Child processes (workers, schedulers) killed and reaped on drop, so a failing test never
/// leaves them running.
pub struct Guard(pub Vec<std::process::Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The name libtest knows a test by, for re-executing this binary on that one test:
/// `module_path!()` without the crate name, then the function name.
pub fn test_name(module_path: &str, function: &str) -> String {
    match module_path.split_once("::") {
        Some((_, path)) => format!("{path}::{function}"),
        None => function.to_string(),
    }
}

/// Milliseconds since the Unix epoch (the clock Redis and the engine use).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Every member of the sorted set `key` with its score moved to `score`: seeds "this job is
/// due" (or "this lease expired", "this completion is old") without waiting for the clock.
pub async fn rescore_all(
    raw: &mut redis::aio::MultiplexedConnection,
    key: &str,
    score: i64,
) -> usize {
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(raw)
        .await
        .expect("zrange");
    for chunk in members.chunks(500) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key).arg("XX");
        for m in chunk {
            cmd.arg(score).arg(m);
        }
        let _: () = cmd.query_async(raw).await.expect("zadd");
    }
    members.len()
}
