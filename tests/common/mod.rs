//! The real-server test fixture: every test gets its own `redis-server` (free loopback port,
//! temp dir, killed on drop) and a client on it. Never the machine's shared 6379.
#![allow(dead_code)]

pub mod load;
pub mod proxy;

use std::future::Future;
use std::time::{Duration, Instant};

use queue::testing::RedisServer;
use queue::Client;

pub struct Env {
    pub server: RedisServer,
    pub client: Client,
    /// The URL the code under test connects with: the server's, or in the ACL mode the suite
    /// user's.
    url: String,
}

impl Env {
    pub async fn start() -> Env {
        Env::on(server()).await
    }

    /// An environment on a server started with [`server_with`].
    pub async fn on(server: RedisServer) -> Env {
        init_tracing();
        let url = url_of(&server);
        let client = Client::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}\nlog:\n{}", server.log()));
        Env {
            server,
            client,
            url,
        }
    }

    /// A connection for the test itself (seeding state, MONITOR, CONFIG, DEBUG): the server's
    /// administrator, whatever the ACL mode.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        raw(&self.server).await
    }

    /// The URL for the code under test (clients, workers, the CLI).
    pub fn url(&self) -> &str {
        &self.url
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
        queue::testing::with_credentials(self.server.url(), name, &format!("{name}-pw"))
    }
}

/// The ACL mode's users.
pub mod acl {
    /// The event-bus patterns the suite subscribes to: Redis checks a pattern subscription
    /// against the user's channel rules literally, so each is a rule of its own.
    pub const PATTERNS: &str = "&queue:events:orders.* &queue:events:invoices.*";

    /// The suite's user in the ACL mode: producer, worker and operator at once (a test plays
    /// all three through one client), so the union of the three documented users, on namespace
    /// `queue` only, with the patterns it subscribes to. Nothing `@dangerous` but `INFO`.
    pub fn suite() -> String {
        let union = queue::acl::union_rules("queue").expect("rules");
        format!("{union} {PATTERNS}")
    }

    /// The password of the servers' administrator (the `default` user) in the ACL mode.
    pub const ADMIN_PASSWORD: &str = "queue-test-admin";
    /// The suite user's name and password.
    pub const SUITE_USER: (&str, &str) = ("suite", "queue-test-suite");
}

/// Whether this run is the ACL run (`QUEUE_TEST_ACL=1`): every server the suite starts then has
/// a password on its `default` user (for the test's own seeding, MONITOR, CONFIG) and the code
/// under test connects as [`acl::suite`], the union of the documented users, so any command or
/// key the documented lists do not allow fails the test that needs it.
pub fn acl_mode() -> bool {
    std::env::var("QUEUE_TEST_ACL").is_ok_and(|v| v == "1")
}

/// A server for a test: [`server_with`] the defaults.
pub fn server() -> RedisServer {
    server_with(queue::testing::RedisServerOptions::default())
}

/// Starts a server with `opts`; in the ACL mode with the administrator's password and the
/// suite user (as start-up arguments, so they survive the server's restarts).
pub fn server_with(mut opts: queue::testing::RedisServerOptions) -> RedisServer {
    if acl_mode() {
        let (name, password) = acl::SUITE_USER;
        opts.password = Some(acl::ADMIN_PASSWORD.into());
        // A replica authenticates to its primary as the administrator.
        opts.args
            .extend(["--masterauth", acl::ADMIN_PASSWORD].map(String::from));
        opts = opts.user(name, password, &acl::suite());
    }
    let server = RedisServer::start_with(opts)
        .expect("redis-server must be installed (apt-get install redis-server)");
    let url = url_of(&server);
    // A TLS server's certificates are its test's own; the same user is proven on every other.
    if acl_mode() && !url.starts_with("rediss://") {
        assert_least_privilege(&url);
    }
    server
}

/// The ACL run is what it says: the suite's user is refused a `@dangerous` command and the
/// keys of another namespace.
pub fn assert_least_privilege(url: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .expect("the suite user connects");
    for cmd in [redis::cmd("CONFIG").arg("GET").arg("maxmemory").clone(), {
        redis::cmd("GET").arg("other:key").clone()
    }] {
        let err = cmd
            .query::<redis::Value>(&mut con)
            .expect_err("refused to the suite user");
        assert_eq!(err.code(), Some("NOPERM"), "{err}");
    }
}

/// The URL the code under test connects to `server` with.
pub fn url_of(server: &RedisServer) -> String {
    as_suite(server.url())
}

/// `url` (a server's, or a proxy's in front of one) as the code under test connects to it: in
/// the ACL mode with the suite user's credentials.
pub fn as_suite(url: &str) -> String {
    if acl_mode() {
        let (name, password) = acl::SUITE_USER;
        queue::testing::with_credentials(url, name, password)
    } else {
        url.to_string()
    }
}

/// The URL of `server`'s administrator (the test's own connections).
pub fn admin_url_of(server: &RedisServer) -> String {
    server.admin_url()
}

/// A connection as `server`'s administrator.
pub async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.admin_url().as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// A server that survives its restarts with everything it acknowledged: append-only file,
/// `appendfsync always`.
pub fn aof_server() -> RedisServer {
    server_with(queue::testing::RedisServerOptions {
        args: ["--appendonly", "yes", "--appendfsync", "always"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
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

/// The job ids a handler has run, for the failover tests: a handler inserts, the test counts.
pub struct Seen(std::sync::Mutex<Option<std::collections::HashSet<String>>>);

impl Seen {
    pub const fn new() -> Seen {
        Seen(std::sync::Mutex::new(None))
    }

    pub fn insert(&self, id: String) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Default::default)
            .insert(id);
    }

    pub fn all(&self) -> std::collections::HashSet<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |s| s.len())
    }
}

impl Default for Seen {
    fn default() -> Seen {
        Seen::new()
    }
}
