//! The real-server test fixture: every test gets its own `redis-server` (free loopback port,
//! temp dir, killed on drop) and a client on it. Never the machine's shared 6379.
#![allow(dead_code)]

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

/// Builds a worker on `client` as `configure` says and runs it until [`RunningWorker::stop`].
pub async fn start_worker(
    client: &Client,
    configure: impl FnOnce(queue::WorkerBuilder) -> queue::WorkerBuilder,
) -> RunningWorker {
    let worker = configure(queue::WorkerBuilder::with_client(client.clone()))
        .build()
        .await
        .expect("build worker");
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
