//! The producer side: a `Client` any service can use to enqueue and inspect jobs, without
//! linking handler code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncConnectionConfig;

use crate::endpoint::{Connection, Endpoint, Target};
use crate::engine::codec::{self, Outcome};
use crate::engine::job::{millis, Job, JobId, JobOptions, JobState, DEFAULT_QUEUE};
use crate::engine::registry::JobType;
use crate::engine::scripts::scripts;
use crate::error::{Error, Result};
use crate::keys::{NamespaceKeys, QueueKeys, DEFAULT_NAMESPACE};

/// Largest encoded job accepted by default (512 KiB): Redis handles more, but a job queue is the
/// wrong place for blobs, and one huge job stalls every other client of the server.
pub const DEFAULT_MAX_PAYLOAD: usize = 512 * 1024;

/// The most jobs one script call carries; larger batches are split and sent concurrently.
pub const MAX_BATCH: usize = 1000;

/// Connection settings shared by producers and workers.
///
/// Its `Debug` shows the URL redacted ([`crate::admin::redact`]): a password in it never
/// reaches a log.
#[derive(Clone)]
pub struct ClientConfig {
    /// Redis URL (`redis://host:port/db`, `redis+unix:///path`).
    pub url: String,
    /// Key namespace (default `queue`).
    pub namespace: String,
    /// Largest encoded job accepted.
    pub max_payload: usize,
    /// How long one command may take before the call fails as unreachable.
    pub response_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How durable enqueues, completions and failures must be before they are acknowledged
    /// (default: as durable as the server's own persistence).
    pub durability: crate::script::Durability,
    /// Connect to a server that may evict keys (a `maxmemory` with a `maxmemory-policy` other
    /// than `noeviction`). Off by default: eviction drops whole queues without a word, so
    /// [`Client::connect_with`] refuses such a server. Turn it on for a client used only for
    /// the cache layer on a cache instance (`QUEUE_ALLOW_EVICTION=1`).
    pub allow_eviction: bool,
    /// Certificates for a `rediss://` URL, beyond the system's roots.
    pub tls: TlsFiles,
}

/// Files for TLS (`rediss://` URLs): a CA to trust instead of the system's roots (a private
/// CA), and a client certificate and key for servers that ask for one (`tls-auth-clients`).
/// PEM files; from the environment, `QUEUE_TLS_CA_FILE`, `QUEUE_TLS_CERT_FILE`,
/// `QUEUE_TLS_KEY_FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to.
    pub ca_file: Option<std::path::PathBuf>,
    /// The client's certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<std::path::PathBuf>,
    /// The client's private key (with `cert_file`).
    pub key_file: Option<std::path::PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field is named here, so a field added later does not compile until someone
        // decides whether it is a secret (a derived Debug printed the URL's password).
        let ClientConfig {
            url,
            namespace,
            max_payload,
            response_timeout,
            connect_timeout,
            durability,
            allow_eviction,
            tls,
        } = self;
        f.debug_struct("ClientConfig")
            .field("url", &crate::error::redact(url))
            .field("namespace", namespace)
            .field("max_payload", max_payload)
            .field("response_timeout", response_timeout)
            .field("connect_timeout", connect_timeout)
            .field("durability", durability)
            .field("allow_eviction", allow_eviction)
            // Paths, not contents: nothing secret.
            .field("tls", tls)
            .finish()
    }
}

impl ClientConfig {
    /// Settings for `url` with every default.
    pub fn new(url: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            durability: crate::script::Durability::Server,
            allow_eviction: false,
            tls: TlsFiles::default(),
        }
    }

    /// Settings from the environment: `REDIS_URL` (default `redis://127.0.0.1:6379`) and
    /// `QUEUE_NAMESPACE` (default `queue`).
    pub fn from_env() -> ClientConfig {
        let mut c = ClientConfig::new(
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        );
        if let Ok(ns) = std::env::var("QUEUE_NAMESPACE") {
            c.namespace = ns;
        }
        c.allow_eviction = std::env::var("QUEUE_ALLOW_EVICTION").is_ok_and(|v| v == "1");
        let path = |name: &str| std::env::var_os(name).map(std::path::PathBuf::from);
        c.tls = TlsFiles {
            ca_file: path("QUEUE_TLS_CA_FILE"),
            cert_file: path("QUEUE_TLS_CERT_FILE"),
            key_file: path("QUEUE_TLS_KEY_FILE"),
        };
        c
    }
}

/// A handle to the queue: enqueue jobs, await their outcome, pause and inspect queues.
///
/// Cheap to clone; clones share one multiplexed connection, which pipelines concurrent calls.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// The server, or the Sentinels that name it.
    endpoint: Endpoint,
    /// Queues this client has already recorded in the namespace's queue registry.
    registered: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Shard counts of queues as the namespace's registry says, and when each was read.
    shards: std::sync::Mutex<HashMap<String, (u16, std::time::Instant)>>,
    /// The next shard for a job without a shard key.
    next_shard: std::sync::atomic::AtomicU64,
    /// The shard names of split queues by (queue, count): finding one takes a search.
    shard_names: std::sync::Mutex<ShardNames>,
    /// The shared connection, when one is open.
    shared: std::sync::RwLock<Option<Shared>>,
    /// Held while a cluster connection is being opened (which takes round trips: the slot
    /// map), so concurrent first calls open one, not one each.
    opening: tokio::sync::Mutex<()>,
    /// The generation of the last shared connection opened.
    generation: std::sync::atomic::AtomicU64,
    manager: ConnectionManagerConfig,
    /// The database the URL selects.
    db: i64,
}

/// The shard names of split queues, by queue and shard count.
type ShardNames = HashMap<(String, u16), Arc<Vec<String>>>;

/// The shared connection, its generation, and the endpoint epoch it was opened in.
#[derive(Clone)]
struct Shared {
    con: Connection,
    generation: u64,
    endpoint: u64,
}

impl Inner {
    /// The shared connection, opened (lazily: it connects at its first call) when there is
    /// none.
    async fn shared(&self) -> redis::RedisResult<Shared> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        if let Some(cluster) = self.endpoint.cluster() {
            let _one = self.opening.lock().await;
            if let Some(s) = self.current() {
                return Ok(s);
            }
            let con = Connection::Cluster(cluster.connect(None).await?);
            return Ok(self.install(con, 0));
        }
        let (endpoint, redis) = self.endpoint.client().await?;
        let shared = self.shared.write().unwrap_or_else(|p| p.into_inner());
        // Another call may have opened one meanwhile (one connection is shared by all), or
        // one of a later epoch: an older answer never replaces it.
        if let Some(s) = &*shared {
            if s.endpoint >= endpoint {
                return Ok(s.clone());
            }
        }
        drop(shared);
        let manager = ConnectionManager::new_lazy_with_config(redis, self.manager.clone())?;
        Ok(self.install(Connection::Manager(manager), endpoint))
    }

    /// The shared connection, if one of the current epoch is open.
    fn current(&self) -> Option<Shared> {
        let epoch = self.endpoint.epoch();
        let shared = self.shared.read().unwrap_or_else(|p| p.into_inner());
        shared.as_ref().filter(|s| s.endpoint == epoch).cloned()
    }

    /// Makes `con`, opened in `endpoint` epoch, the shared connection, unless one of that
    /// epoch or a later one was installed meanwhile (an older answer never replaces it).
    fn install(&self, con: Connection, endpoint: u64) -> Shared {
        let mut shared = self.shared.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*shared {
            if s.endpoint >= endpoint {
                return s.clone();
            }
        }
        let fresh = Shared {
            con,
            generation: self
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
            endpoint,
        };
        *shared = Some(fresh.clone());
        fresh
    }

    /// Retires the shared connection after a failure that says it is no longer the one to
    /// use: a timeout (it may be half-open), or, behind Sentinels, a sign the primary moved.
    fn observe<T>(&self, used: &Shared, result: &redis::RedisResult<T>) {
        let Err(e) = result else { return };
        // Behind Sentinels, this ends the epoch, which retires the connection by itself.
        let moved = self.endpoint.observe(used.endpoint, e);
        if !e.is_timeout() || moved {
            return;
        }
        let mut shared = self.shared.write().unwrap_or_else(|p| p.into_inner());
        // Only the first timeout of a generation retires it.
        if shared.as_ref().map(|s| s.generation) != Some(used.generation) {
            return;
        }
        tracing::warn!(
            url = %crate::error::redact(&self.config.url),
            "a Redis call timed out; the connection is replaced (it may be half-open)"
        );
        *shared = None;
    }
}

/// The shared connection as handed to one call. The connection manager reconnects by itself
/// after a Redis restart or a dropped connection (the request that hit the failure errors,
/// callers retry, later ones use the new connection). It does not after a timeout, and a
/// half-open connection (the peer or a middlebox gone without a reset) times out forever: so
/// a timeout retires the connection, and the next calls open a fresh one. Behind Sentinels, a
/// failure a failover explains retires it too, and the next calls ask the Sentinels where the
/// primary is. Calls still in flight on the old connection finish or time out on it.
#[derive(Clone)]
pub(crate) struct Con {
    inner: Arc<Inner>,
}

impl redis::aio::ConnectionLike for Con {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let mut used = self.inner.shared().await?;
            let result = used.con.req_packed_command(cmd).await;
            self.inner.observe(&used, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let mut used = self.inner.shared().await?;
            let result = used.con.req_packed_commands(pipeline, offset, count).await;
            self.inner.observe(&used, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        // Every connection of a client selects the database its URL names.
        self.inner.db
    }
}

/// A connection for an application's own Redis commands, through its client's endpoint: the
/// one server, the primary the Sentinels name (followed through failovers), or the cluster
/// (each command sent to the node of its keys). It shares the client's connection, so it
/// costs nothing to take; use it for plain commands only (no blocking calls, no
/// `SUBSCRIBE`: they would hold up every other call).
#[derive(Clone)]
pub struct RedisConnection {
    con: Con,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection").finish_non_exhaustive()
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.con.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.con.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }
}

impl Con {
    /// Runs `cmd` on `target` ([`Connection::query_at`]).
    ///
    /// # Errors
    ///
    /// The connection's or the server's error.
    ///
    /// # Cancel safety
    ///
    /// As the command's.
    pub(crate) async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        target: &Target,
    ) -> redis::RedisResult<T> {
        let mut used = self.inner.shared().await?;
        let result = used.con.query_at(cmd, target).await;
        self.inner.observe(&used, &result);
        result
    }

    /// The cluster's masters, `None` on one server ([`Connection::masters`]).
    ///
    /// # Errors
    ///
    /// The connection's or the server's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn masters(&mut self) -> redis::RedisResult<Option<Vec<(String, u16)>>> {
        let mut used = self.inner.shared().await?;
        let result = used.con.masters().await;
        self.inner.observe(&used, &result);
        result
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &crate::error::redact(&self.inner.config.url))
            .field("namespace", &self.inner.config.namespace)
            .finish()
    }
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id; for a duplicate, the id of the job that holds the unique key.
    pub id: JobId,
    /// The queue the job is in.
    pub queue: String,
    /// True when nothing was created because a job with the same unique key exists.
    pub duplicate: bool,
}

/// A job to enqueue, built from a typed `#[job]` ([`NewJob::of`]) or from a name and raw
/// MessagePack arguments ([`NewJob::raw`], for the CLI and other languages' conventions).
#[derive(Debug, Clone)]
pub struct NewJob {
    name: String,
    args: Vec<u8>,
    options: JobOptions,
    traceparent: Option<String>,
    shard_key: Option<String>,
}

impl NewJob {
    /// A job of type `J` with `args`; the options default to `J`'s `#[job]` attributes.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the arguments cannot be serialised.
    pub fn of<J: JobType>(args: &J::Args) -> Result<NewJob> {
        Ok(NewJob {
            name: J::NAME.to_string(),
            args: codec::encode_value(args, "job arguments")?,
            options: J::options(),
            traceparent: None,
            shard_key: None,
        })
    }

    /// A job by name with arguments already encoded as MessagePack.
    pub fn raw(name: impl Into<String>, args: Vec<u8>) -> NewJob {
        NewJob {
            name: name.into(),
            args,
            options: JobOptions::default(),
            traceparent: None,
            shard_key: None,
        }
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }
    /// Sets the priority (0..=255, higher runs first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.options.priority = Some(priority);
        self
    }
    /// Runs the job no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay = Some(delay);
        self
    }
    /// Runs the job no earlier than `at`.
    pub fn run_at(mut self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.options.run_at = Some(at);
        self
    }
    /// Makes the job idempotent: while `key` lives (`ttl`), enqueueing another job with the same
    /// key creates nothing and returns this job's id.
    pub fn unique(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.options.unique_key = Some(key.into());
        self.options.unique_for = Some(ttl);
        self
    }
    /// Makes the job idempotent by its name and arguments for `ttl` (the key is derived: the
    /// job name and a hash of the encoded arguments).
    pub fn unique_for_args(mut self, ttl: Duration) -> Self {
        self.options.unique_key = None;
        self.options.unique_for = Some(ttl);
        self
    }
    /// Sets the maximum number of attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.options.max_attempts = Some(n);
        self
    }
    /// Sets the backoff policy.
    pub fn backoff(mut self, backoff: crate::engine::job::Backoff) -> Self {
        self.options.backoff = Some(backoff);
        self
    }
    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
    /// Carries the producer's W3C trace context (a `traceparent` header value, e.g. from the
    /// request that caused the job): the worker records it on the job's span and hands it to
    /// the handler (`JobContext::traceparent`), so a tracing backend joins the two. An invalid
    /// value fails the enqueue with [`Error::InvalidJob`].
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// In a split queue ([`Client::split_queue`]), sends the job to the shard of `key`, so jobs
    /// with the same key stay in one shard, in order (priority, then FIFO). A job with a
    /// unique key goes to that key's shard instead (so the key stays unique over the shards),
    /// and a job with neither to the next shard in turn. No effect on a queue that is not
    /// split.
    pub fn shard_key(mut self, key: impl Into<String>) -> Self {
        self.shard_key = Some(key.into());
        self
    }

    /// The job's options so far.
    pub fn options(&self) -> &JobOptions {
        &self.options
    }

    /// The job name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The encoded arguments.
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    pub(crate) fn into_job(self, now_ms: i64) -> Result<(Job, i64, Option<Duration>)> {
        let o = self.options;
        if self.name.is_empty() {
            return Err(Error::InvalidJob("job name must not be empty".into()));
        }
        // Names and keys show up in logs and terminals: a newline would forge a log line, an
        // escape sequence rewrite a terminal.
        if self.name.chars().any(char::is_control) {
            return Err(Error::InvalidJob(format!(
                "job name {:?} must not contain control characters",
                self.name
            )));
        }
        if let Some(k) = o
            .unique_key
            .as_deref()
            .filter(|k| k.chars().any(char::is_control))
        {
            return Err(Error::InvalidJob(format!(
                "unique key {k:?} must not contain control characters"
            )));
        }
        if o.max_attempts == Some(0) {
            return Err(Error::InvalidJob("max_attempts must be at least 1".into()));
        }
        if o.timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidJob("timeout must be positive".into()));
        }
        let unique_key = match (o.unique_key, o.unique_for) {
            (Some(k), _) if k.is_empty() => {
                return Err(Error::InvalidJob("unique key must not be empty".into()))
            }
            (Some(_), None) => {
                return Err(Error::InvalidJob(
                    "a unique key needs a TTL (unique_for)".into(),
                ))
            }
            (_, Some(t)) if t < Duration::from_millis(1) => {
                return Err(Error::InvalidJob("unique_for must be at least 1 ms".into()))
            }
            (Some(k), Some(_)) => Some(k),
            // A job type declared `unique_for` without the producer naming a key: the job is
            // unique by name and arguments (what asynq's `Unique` option does).
            (None, Some(_)) => Some(format!(
                "{}:{:016x}",
                self.name,
                crate::engine::job::fnv1a(&self.args, 0xcbf2_9ce4_8422_2325)
            )),
            (None, None) => None,
        };
        let unique_for = o.unique_for;
        let run_at_ms = match (o.run_at, o.delay) {
            (Some(at), _) => at.timestamp_millis(),
            (None, Some(d)) => {
                now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            (None, None) => 0,
        };
        let mut job = Job::new(
            JobId::generate(),
            o.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_string()),
            self.name,
            self.args,
            now_ms,
        );
        job.priority = o.priority.unwrap_or(0);
        job.max_attempts = o.max_attempts;
        job.backoff = o.backoff;
        job.timeout_ms = o.timeout.map(millis);
        job.run_at_ms = (run_at_ms > now_ms).then_some(run_at_ms);
        job.unique_key = unique_key;
        if let Some(tp) = &self.traceparent {
            if !crate::engine::job::valid_traceparent(tp) {
                return Err(Error::InvalidJob(format!(
                    "traceparent {tp:?} is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)"
                )));
            }
        }
        job.traceparent = self.traceparent;
        Ok((job, run_at_ms, unique_for))
    }
}

/// Adds `chunk` to an enqueue-shaped script call (`enqueue`, `cron_fire`): the distinct unique
/// keys to KEYS, four ARGV per job (see `scripts/lib/enqueue_jobs.lua`).
pub(crate) fn push_jobs(call: &mut crate::script::Call<'_>, keys: &QueueKeys, chunk: &[Prepared]) {
    // Unique keys go in KEYS (declared, never built inside the script); jobs refer to them by
    // index, and two jobs of one batch with the same key share one entry.
    let mut unique_index: HashMap<&str, usize> = HashMap::new();
    for Prepared { job, .. } in chunk {
        if let Some(u) = &job.unique_key {
            if !unique_index.contains_key(u.as_str()) {
                unique_index.insert(u, unique_index.len() + 1);
                call.key(keys.unique(u));
            }
        }
    }
    for Prepared {
        job,
        run_at,
        unique_for,
        member,
        ..
    } in chunk
    {
        let k = job
            .unique_key
            .as_deref()
            .and_then(|u| unique_index.get(u))
            .copied()
            .unwrap_or(0);
        call.arg(member.as_slice())
            .arg(*run_at)
            .arg(k)
            .arg(unique_for.map(millis).unwrap_or(0));
    }
}

/// A validated, encoded job on its way to the enqueue script.
pub(crate) struct Prepared {
    /// Position in the caller's batch, to return results in input order.
    pub(crate) index: usize,
    pub(crate) job: Job,
    /// Run-at in ms (0 = now).
    pub(crate) run_at: i64,
    pub(crate) unique_for: Option<Duration>,
    pub(crate) member: Vec<u8>,
}

/// Counts of jobs by state in one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready to run.
    pub pending: u64,
    /// Delayed (enqueued to run later).
    pub scheduled: u64,
    /// Failed, waiting for their retry (backoff).
    pub retrying: u64,
    /// Taken back from a lost worker, waiting to run again.
    pub recovered: u64,
    /// Leased by a worker.
    pub active: u64,
    /// Completed and retained.
    pub completed: u64,
    /// Dead-lettered.
    pub dead: u64,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Client {
    /// Connects to Redis at `url` with default settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, [`Error::Unreachable`] when Redis does not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    pub async fn connect(url: &str) -> Result<Client> {
        Client::connect_with(ClientConfig::new(url)).await
    }

    /// Connects with explicit settings, and loads the engine's scripts.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written (loading scripts is idempotent).
    pub async fn connect_with(config: ClientConfig) -> Result<Client> {
        QueueKeys::new(&config.namespace, DEFAULT_QUEUE)?;
        let endpoint = Endpoint::open(&config)?;
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connect_timeout));
        // On a cluster, the first seed node that answers as a Redis is checked (its nodes run
        // one version and configuration in any deployment that works).
        let mut tries = endpoint.candidates();
        let (con, redis, version) = loop {
            let (_, redis) = endpoint.client().await.map_err(Error::redis(&config.url))?;
            let attempt = async {
                let mut con = redis
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map_err(Error::redis(&config.url))?;
                let version = check_server(&mut con, &config).await?;
                Ok::<_, Error>((con, version))
            };
            match attempt.await {
                Ok((con, version)) => break (con, redis, version),
                // A mistake in the URL or the server's setup is the same on every seed.
                Err(e) if tries > 1 && !matches!(e, Error::Config(_)) => {
                    tries -= 1;
                    endpoint.skip_candidate();
                }
                Err(e) => return Err(e),
            }
        };
        if matches!(config.durability, crate::script::Durability::Fsync { .. }) && version < (7, 2)
        {
            return Err(Error::Config(format!(
                "fsync durability needs WAITAOF (Redis 7.2 or later); {} runs {}.{}: use \
                 `appendfsync always` on the server with the default durability, or \
                 replicated durability",
                crate::error::redact(&config.url),
                version.0,
                version.1
            )));
        }
        // On a cluster, through a cluster connection: it loads them on every master.
        let mut con = match endpoint.cluster() {
            Some(cluster) => Connection::Cluster(
                cluster
                    .connect(None)
                    .await
                    .map_err(Error::redis(&config.url))?,
            ),
            None => Connection::Multiplexed(con),
        };
        for script in scripts().all() {
            script.load(&mut con, &config.url).await?;
        }
        drop(con);
        // Reachability and version were checked on a plain connection, so a Redis that is down
        // at start fails fast; the long-lived connection reconnects by itself from now on.
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connect_timeout))
            .set_min_delay(Duration::from_millis(20))
            // Reconnect tries back off to 400 ms at most: a restarted Redis is found again
            // well within a second (a longer pause here was most of the time to resume).
            .set_max_delay(Duration::from_millis(400))
            .set_number_of_retries(6);
        let db = redis.get_connection_info().redis_settings().db();
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                endpoint,
                registered: Default::default(),
                shards: Default::default(),
                shard_names: Default::default(),
                // Short-lived producers (one CLI call each) would all start at shard 0.
                next_shard: std::sync::atomic::AtomicU64::new(u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos()),
                )),
                shared: std::sync::RwLock::new(None),
                opening: Default::default(),
                generation: Default::default(),
                manager,
                db,
            }),
        })
    }

    /// Whether this client talks to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.inner.endpoint.cluster().is_some()
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn url(&self) -> &str {
        &self.inner.config.url
    }

    /// A new pub/sub connection (its own socket), within the connect timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        Ok(self.pubsub_in_epoch().await?.0)
    }

    /// [`Client::pubsub`], and the endpoint epoch it was opened in (see
    /// [`Client::moved`]).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    pub(crate) async fn pubsub_in_epoch(&self) -> Result<(redis::aio::PubSub, u64)> {
        // Finding the server has timeouts of its own (one per Sentinel asked); only the
        // connection to it is bounded here.
        // On a cluster, any node serves (it forwards what is published on any other); the
        // seeds are tried in turn.
        let mut tries = self.inner.endpoint.candidates();
        loop {
            tries -= 1;
            let (epoch, redis) = self.server().await?;
            let timeout = self.inner.config.connect_timeout;
            let e = match tokio::time::timeout(timeout, redis.get_async_pubsub()).await {
                Ok(Ok(ps)) => return Ok((ps, epoch)),
                Ok(Err(e)) => e,
                Err(_) => redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no pub/sub connection within {timeout:?}"),
                )),
            };
            self.observe_failure(epoch, &e);
            if tries == 0 {
                return Err(Error::redis(self.url())(e));
            }
        }
    }

    /// The redis-rs client of the server to talk to now (behind Sentinels, the primary they
    /// name), and the endpoint epoch it belongs to.
    async fn server(&self) -> Result<(u64, redis::Client)> {
        self.inner
            .endpoint
            .client()
            .await
            .map_err(Error::redis(self.url()))
    }

    /// Notes a failure on a connection of this client's own (a dedicated or pub/sub one)
    /// opened in `epoch`: if a failover explains it, the primary is looked up again before
    /// the next connection.
    pub(crate) fn observe_failure(&self, epoch: u64, e: &redis::RedisError) {
        self.inner.endpoint.observe(epoch, e);
    }

    /// The endpoint's epoch ([`Endpoint::epoch`]): a connection of this client's own opened in
    /// an earlier one is to be replaced (the primary may have moved).
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.endpoint.epoch()
    }

    /// Resolves when `epoch` has ended (the primary may have moved); never on one server.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn moved(&self, epoch: u64) {
        self.inner.endpoint.moved(epoch).await
    }

    /// The keys of `queue` in this client's namespace.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid queue name.
    pub fn keys(&self, queue: &str) -> Result<QueueKeys> {
        QueueKeys::new(&self.inner.config.namespace, queue)
    }

    /// A connection for the application's own commands ([`RedisConnection`]).
    pub fn redis_connection(&self) -> RedisConnection {
        RedisConnection { con: self.con() }
    }

    pub(crate) fn con(&self) -> Con {
        Con {
            inner: self.inner.clone(),
        }
    }

    /// A new dedicated connection, for blocking commands that must not hold up the shared one,
    /// and the endpoint epoch it was opened in (see [`Client::moved`]).
    pub(crate) async fn dedicated(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<(Connection, u64)> {
        if let Some(cluster) = self.inner.endpoint.cluster() {
            // One command blocks a node's connection of a cluster connection too: this one is
            // the caller's alone.
            return cluster
                .connect(response_timeout.or(Some(Duration::from_secs(24 * 3600))))
                .await
                .map(|con| (Connection::Cluster(con), 0))
                .map_err(Error::redis(self.url()));
        }
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(response_timeout)
            .set_connection_timeout(Some(self.inner.config.connect_timeout));
        let (epoch, redis) = self.server().await?;
        match redis
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(con) => Ok((Connection::Multiplexed(con), epoch)),
            Err(e) => {
                self.observe_failure(epoch, &e);
                Err(Error::redis(self.url())(e))
            }
        }
    }

    /// Enqueues a job of type `J` with its `#[job]` defaults.
    ///
    /// # Errors
    ///
    /// As [`Client::enqueue_job`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may or may not have enqueued the job.
    pub async fn enqueue<J: JobType>(&self, args: &J::Args) -> Result<Enqueued> {
        self.enqueue_job(NewJob::of::<J>(args)?).await
    }

    /// Enqueues one job.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] or [`Error::PayloadTooLarge`] before anything is sent;
    /// [`Error::Unreachable`] or [`Error::Redis`] from Redis.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may or may not have enqueued the job.
    pub async fn enqueue_job(&self, job: NewJob) -> Result<Enqueued> {
        let mut out = self.enqueue_batch(vec![job]).await?;
        out.pop()
            .ok_or_else(|| Error::Protocol("enqueue returned no result".into()))
    }

    /// Enqueues many jobs in few round trips: up to [`MAX_BATCH`] jobs per script call, calls
    /// for different queues and chunks sent concurrently on the pipelined connection. Results
    /// come back in input order.
    ///
    /// Each chunk is atomic; if a call fails, chunks sent before it may have been enqueued.
    ///
    /// # Errors
    ///
    /// As [`Client::enqueue_job`]; every job is validated before the first is sent.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        let now = now_ms();
        // Group by queue: one script call touches one queue's keys only.
        let mut groups: HashMap<String, Vec<Prepared>> = HashMap::new();
        let total = jobs.len();
        let mut counts: HashMap<String, u16> = HashMap::new();
        for new in &jobs {
            let queue = new.options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
            if !counts.contains_key(queue) {
                self.check_shard(queue).await?;
                counts.insert(queue.to_string(), self.shard_count(queue).await?);
            }
        }
        for (i, new) in jobs.into_iter().enumerate() {
            let queue = new.options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
            let shards = counts.get(queue).copied().unwrap_or(1);
            let prepared = self.prepare_in(i, new, now, shards)?;
            groups
                .entry(prepared.job.queue.clone())
                .or_default()
                .push(prepared);
        }
        let keys = groups
            .keys()
            .map(|q| Ok((q.clone(), self.keys(q)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        self.register_queues(groups.keys()).await?;
        let mut calls = Vec::new();
        for (queue, group) in &groups {
            for chunk in group.chunks(MAX_BATCH) {
                calls.push(self.enqueue_chunk(&keys[queue], chunk));
            }
        }
        let replies = futures_util::future::join_all(calls).await;
        let mut out: Vec<Option<Enqueued>> = vec![None; total];
        for reply in replies {
            for (i, e) in reply? {
                out[i] = Some(e);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| Error::Protocol("enqueue lost a result".into())))
            .collect()
    }

    /// How many shards `queue` is split in (1 for a queue that is not), as the namespace's
    /// registry says; read again after 5 s, so producers follow a split within seconds.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid name; [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn shard_count(&self, queue: &str) -> Result<u16> {
        const FRESH: Duration = Duration::from_secs(5);
        self.keys(queue)?;
        if crate::keys::shard_of(queue).is_some() {
            return Ok(1);
        }
        {
            let known = self.inner.shards.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((n, at)) = known.get(queue) {
                if at.elapsed() < FRESH {
                    return Ok(*n);
                }
            }
        }
        let ns = self.namespace_keys()?;
        let n: Option<String> = redis::cmd("HGET")
            .arg(ns.shards())
            .arg(queue)
            .query_async(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))?;
        let n = n
            .and_then(|n| n.parse::<u16>().ok())
            .map_or(1, |n| n.clamp(1, crate::keys::MAX_SHARDS));
        let mut known = self.inner.shards.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(queue.to_string(), (n, std::time::Instant::now()));
        Ok(n)
    }

    /// Splits `queue` in `shards` shards, each its own hash tag ([`crate::wire::shard_name`]),
    /// so on a cluster one busy queue spreads over several masters. Producers send each job
    /// to one shard ([`NewJob::shard_key`]); workers serve every shard, and the queue itself
    /// (which keeps what it held before the split). A queue is split once: asking for another
    /// count is refused, since jobs in a shard no count names would be served by no one.
    /// Workers learn of a split when they start: restart them after splitting a queue they
    /// serve.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid name, a count outside 2 to
    /// [`crate::wire::MAX_SHARDS`], or a queue already split in another count;
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn split_queue(&self, queue: &str, shards: u16) -> Result<()> {
        self.keys(queue)?;
        if crate::keys::shard_of(queue).is_some() {
            return Err(Error::Config(format!(
                "{queue:?} is a shard: split its queue"
            )));
        }
        if !(2..=crate::keys::MAX_SHARDS).contains(&shards) {
            return Err(Error::Config(format!(
                "a queue is split in 2 to {} shards, not {shards}",
                crate::keys::MAX_SHARDS
            )));
        }
        let ns = self.namespace_keys()?;
        let mut con = self.con();
        redis::cmd("HSETNX")
            .arg(ns.shards())
            .arg(queue)
            .arg(shards)
            .query_async::<()>(&mut con)
            .await
            .map_err(Error::redis(self.url()))?;
        let now: Option<String> = redis::cmd("HGET")
            .arg(ns.shards())
            .arg(queue)
            .query_async(&mut con)
            .await
            .map_err(Error::redis(self.url()))?;
        let now: u16 = now.and_then(|n| n.parse().ok()).unwrap_or(1);
        if now != shards {
            return Err(Error::Config(format!(
                "queue {queue:?} is split in {now} shards, not {shards}: a queue is split once \
                 (drain it and remove it to split it again)"
            )));
        }
        self.inner
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_string(), (now, std::time::Instant::now()));
        self.register_queues([queue.to_string()].iter()).await
    }

    /// Refuses a shard name ([`crate::wire::shard_name`]) that is no shard of its queue's
    /// split as recorded: jobs sent there would sit where no listing shows them.
    async fn check_shard(&self, queue: &str) -> Result<()> {
        let Some((whole, i)) = crate::keys::shard_of(queue) else {
            return Ok(());
        };
        let n = self.shard_count(whole).await?;
        if i < n
            && self
                .shard_names(whole, n)
                .get(usize::from(i))
                .map(String::as_str)
                == Some(queue)
        {
            return Ok(());
        }
        Err(Error::InvalidJob(format!(
            "{queue:?} is no shard of a split queue ({whole:?} has {n} shard(s)): enqueue into \
             {whole:?}, and the job goes to one of its shards"
        )))
    }

    /// Forgets what this client knows of `queue`'s shards (it was removed).
    pub(crate) fn forget_shards(&self, queue: &str) {
        self.inner
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue);
    }

    /// The queues `queue` is made of: itself, then its shards when it is split.
    ///
    /// # Errors
    ///
    /// As [`Client::shard_count`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn shards_of(&self, queue: &str) -> Result<Vec<String>> {
        let n = self.shard_count(queue).await?;
        let mut all = vec![queue.to_string()];
        if n > 1 {
            all.extend(self.shard_names(queue, n).iter().cloned());
        }
        Ok(all)
    }

    /// The names of the `n` shards of `queue` ([`crate::wire::shard_name`]), computed once.
    fn shard_names(&self, queue: &str, n: u16) -> Arc<Vec<String>> {
        let mut known = self
            .inner
            .shard_names
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        known
            .entry((queue.to_string(), n))
            .or_insert_with(|| {
                Arc::new(
                    (0..n)
                        .map(|i| crate::keys::shard_name(queue, i, n))
                        .collect(),
                )
            })
            .clone()
    }

    /// Records queues in the namespace's queue registry (`queue queues` reads it), once per
    /// queue per client: the registry is an index for operators, not job state.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (SADD is idempotent).
    pub async fn register_queues<'a>(
        &self,
        queues: impl IntoIterator<Item = &'a String>,
    ) -> Result<()> {
        let new: Vec<String> = {
            let known = self
                .inner
                .registered
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            queues
                .into_iter()
                .filter(|q| !known.contains(*q))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let ns = NamespaceKeys::new(&self.inner.config.namespace)?;
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(ns.queues()).arg(&new).ignore();
        // The scripts enforce a queue's payload cap (raw producers included): a client
        // configured with another than the default tells the queues it uses.
        let cap = self.inner.config.max_payload;
        if cap != DEFAULT_MAX_PAYLOAD {
            for q in &new {
                pipe.hset(self.keys(q)?.meta(), "max_payload", cap).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))?;
        self.inner
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(new);
        Ok(())
    }

    /// The namespace's shared keys.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace (checked at connect, so never in practice).
    pub fn namespace_keys(&self) -> Result<NamespaceKeys> {
        NamespaceKeys::new(&self.inner.config.namespace)
    }

    /// Validates, encodes and size-checks one job: every enqueue, cron ticks included, goes
    /// through here before its script call.
    pub(crate) fn prepare(&self, index: usize, new: NewJob, now: i64) -> Result<Prepared> {
        self.prepare_in(index, new, now, 1)
    }

    /// [`Client::prepare`] for a queue of `shards` shards: the job goes to its shard (see
    /// [`NewJob::shard_key`]).
    fn prepare_in(&self, index: usize, new: NewJob, now: i64, shards: u16) -> Result<Prepared> {
        let shard_key = new.shard_key.clone();
        let (mut job, run_at, unique_for) = new.into_job(now)?;
        if shards > 1 {
            // A unique key first: it is unique over the queue only if all its jobs go to one
            // shard.
            let i = match job.unique_key.as_deref().or(shard_key.as_deref()) {
                Some(key) => crate::keys::shard_for_key(key, shards),
                None => {
                    let next = self
                        .inner
                        .next_shard
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (next % u64::from(shards)) as u16
                }
            };
            let names = self.shard_names(&job.queue, shards);
            if let Some(name) = names.get(usize::from(i)) {
                job.queue = name.clone();
            }
        }
        let member = codec::encode_member(&job)?;
        if member.len() > self.inner.config.max_payload {
            return Err(Error::PayloadTooLarge {
                size: member.len(),
                limit: self.inner.config.max_payload,
            });
        }
        self.keys(&job.queue)?;
        Ok(Prepared {
            index,
            job,
            run_at,
            unique_for,
            member,
        })
    }

    async fn enqueue_chunk(
        &self,
        keys: &QueueKeys,
        chunk: &[Prepared],
    ) -> Result<Vec<(usize, Enqueued)>> {
        let script = &scripts().enqueue;
        let mut call = script.call();
        call.key(keys.pending())
            .key(keys.scheduled())
            .key(keys.wake())
            .key(keys.meta())
            .key(keys.events());
        call.arg(chunk.len());
        push_jobs(&mut call, keys, chunk);
        let mut con = self.con();
        let reply: Vec<Option<String>> = call
            .invoke_durable(&mut con, self.url(), self.inner.config.durability)
            .await?;
        if reply.len() != chunk.len() {
            return Err(Error::Protocol(format!(
                "enqueue answered {} results for {} jobs",
                reply.len(),
                chunk.len()
            )));
        }
        Ok(chunk
            .iter()
            .zip(reply)
            .map(|(Prepared { index: i, job, .. }, existing)| {
                let (id, duplicate) = match existing {
                    Some(id) => (JobId::from_wire(id), true),
                    None => (job.id.clone(), false),
                };
                (
                    *i,
                    Enqueued {
                        id,
                        queue: job.queue.clone(),
                        duplicate,
                    },
                )
            })
            .collect())
    }

    /// Waits until job `id` of `queue` finishes (completed, dead or discarded) and returns its
    /// outcome, or fails with [`Error::Timeout`] after `timeout`.
    ///
    /// Waiting costs no polling: the caller subscribes to the queue's outcome channel, then
    /// registers its interest and checks the job's state in one script, so an outcome can never
    /// slip between the check and the subscription. A completed job whose outcome was already
    /// trimmed by the retention policy before the call cannot be seen and times out.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Unreachable`], [`Error::Decode`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the registration expires by itself.
    pub async fn wait_for(&self, queue: &str, id: &JobId, timeout: Duration) -> Result<Outcome> {
        let keys = self.keys(queue)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let wait = async {
            // Behind Sentinels, a failover moves the outcome to the new primary: the wait
            // starts again there (subscribe, then check), so an outcome published meanwhile
            // is still found; trouble a failover explains is waited out, within the deadline.
            loop {
                let epoch = self.epoch();
                let attempt = async {
                    let (mut pubsub, epoch) = self.pubsub_in_epoch().await?;
                    pubsub
                        .subscribe(keys.done_channel())
                        .await
                        .map_err(Error::redis(self.url()))?;
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let mut call = scripts().watch.call();
                    call.key(keys.waiters())
                        .key(keys.results())
                        .key(keys.dead_jobs())
                        .arg(id.as_str())
                        .arg(millis(left.max(Duration::from_millis(1))));
                    let reply: Vec<Vec<u8>> = call.invoke(&mut self.con(), self.url()).await?;
                    match reply.first().map(Vec::as_slice) {
                        Some(b"completed") => {
                            return Outcome::decode(
                                reply.get(1).map(Vec::as_slice).unwrap_or_default(),
                            )
                            .map(Some)
                        }
                        Some(b"dead") => {
                            let member = reply.get(1).cloned().unwrap_or_default();
                            return Ok(Some(dead_outcome(&member, queue)));
                        }
                        _ => {}
                    }
                    let mut messages = pubsub.on_message();
                    let heard = async {
                        while let Some(msg) = messages.next().await {
                            let bytes: Vec<u8> = msg.get_payload_bytes().to_vec();
                            if let Ok(outcome) = Outcome::decode(&bytes) {
                                if &outcome.id == id {
                                    return Ok(Some(outcome));
                                }
                            }
                        }
                        Err(Error::unreachable(self.url(), "subscription closed"))
                    };
                    tokio::select! {
                        outcome = heard => outcome,
                        // The primary moved: start again on the new one.
                        () = self.moved(epoch) => Ok(None),
                    }
                };
                match attempt.await {
                    Ok(Some(outcome)) => return Ok(outcome),
                    Ok(None) => {}
                    Err(e)
                        if self.inner.endpoint.follows_failovers() && e.kind().is_retryable() =>
                    {
                        tokio::select! {
                            () = self.moved(epoch) => {}
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout_at(deadline, wait)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Pauses a queue: workers lease nothing from it until [`Client::resume`]; jobs already
    /// running finish normally.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a single idempotent command).
    pub async fn pause(&self, queue: &str) -> Result<()> {
        let mut failed = None;
        for part in self.shards_of(queue).await? {
            let done = self.pause_part(&part).await;
            note_part(queue, &part, done, &mut failed);
        }
        failed.map_or(Ok(()), Err)
    }

    async fn pause_part(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue)?;
        redis::cmd("HSET")
            .arg(keys.meta())
            .arg("paused")
            .arg(1)
            .query_async::<()>(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))
    }

    /// Resumes a paused queue and wakes idle workers.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (idempotent).
    pub async fn resume(&self, queue: &str) -> Result<()> {
        let mut failed = None;
        for part in self.shards_of(queue).await? {
            let done = self.resume_part(&part).await;
            note_part(queue, &part, done, &mut failed);
        }
        failed.map_or(Ok(()), Err)
    }

    async fn resume_part(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue)?;
        // Not a transaction (MULTI would need one more command in every operator's ACL): the
        // wake-up after the flag is cleared only spares idle workers their recheck wait.
        redis::pipe()
            .hdel(keys.meta(), "paused")
            .ignore()
            .rpush(keys.wake(), 1)
            .ignore()
            .ltrim(keys.wake(), -1, -1)
            .ignore()
            .query_async::<()>(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))
    }

    /// Whether a queue is paused.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn is_paused(&self, queue: &str) -> Result<bool> {
        let keys = self.keys(queue)?;
        redis::cmd("HEXISTS")
            .arg(keys.meta())
            .arg("paused")
            .query_async(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))
    }

    /// One `PING`: whether Redis answers (health checks, round-trip figures).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn ping(&self) -> Result<()> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))
    }

    /// Counts jobs by state (O(1) per state: no scan).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts> {
        let k = self.keys(queue)?;
        let (pending, scheduled, retrying, recovered, active, completed, dead): (
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
            u64,
        ) = redis::pipe()
            .zcard(k.pending())
            .zcard(k.scheduled())
            .zcard(k.retry())
            .zcard(k.recovered())
            .zcard(k.active())
            .zcard(k.completed())
            .zcard(k.dead())
            .query_async(&mut self.con())
            .await
            .map_err(Error::redis(self.url()))?;
        Ok(QueueCounts {
            pending,
            scheduled,
            retrying,
            recovered,
            active,
            completed,
            dead,
        })
    }

    /// The newest dead-lettered jobs of a queue, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Redis`], [`Error::Decode`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn dead_jobs(&self, queue: &str, limit: usize) -> Result<Vec<Job>> {
        let k = self.keys(queue)?;
        let mut con = self.con();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(k.dead())
            .arg(0)
            .arg(limit.saturating_sub(1))
            .arg("REV")
            .query_async(&mut con)
            .await
            .map_err(Error::redis(self.url()))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let members: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(k.dead_jobs())
            .arg(&ids)
            .query_async(&mut con)
            .await
            .map_err(Error::redis(self.url()))?;
        // A member that does not decode (garbage dead-lettered by fetch) is shown as the
        // stand-in the worker would have written, its bytes as the arguments.
        Ok(ids
            .into_iter()
            .zip(members)
            .filter_map(|(id, m)| m.map(|m| (id, m)))
            .map(|(id, m)| {
                codec::decode_member(&m, queue).unwrap_or_else(|e| {
                    let reason = format!("the member does not decode ({e})");
                    Job::undecodable(JobId::from_wire(id), queue, m, 0, &reason)
                })
            })
            .collect())
    }

    /// Moves a dead-lettered job back to its queue with a fresh set of attempts (its error
    /// history is kept).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no dead job has this id.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn replay_dead(&self, queue: &str, id: &JobId) -> Result<()> {
        let k = self.keys(queue)?;
        let mut con = self.con();
        let member: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(k.dead_jobs())
            .arg(id.as_str())
            .query_async(&mut con)
            .await
            .map_err(Error::redis(self.url()))?;
        let member = member.ok_or_else(|| Error::NotFound(id.to_string()))?;
        let mut job = codec::decode_member(&member, queue)?;
        job.failed = 0;
        let mut call = scripts().replay.call();
        call.key(k.dead())
            .key(k.dead_jobs())
            .key(k.pending())
            .key(k.wake());
        call.arg(id.as_str()).arg(codec::encode_member(&job)?);
        let done: i64 = call.invoke(&mut con, self.url()).await?;
        if done == 1 {
            Ok(())
        } else {
            Err(Error::NotFound(id.to_string()))
        }
    }
}

/// Notes how a change to one part of a (split) queue went: every part is tried, whatever
/// happens to one, and the first failure is kept for the caller (a part that failed is done by
/// the next call, which is harmless on the others).
fn note_part(queue: &str, part: &str, done: Result<()>, failed: &mut Option<Error>) {
    if let Err(e) = done {
        tracing::warn!(queue = %queue, part = %part, error = %e, "a part of a split queue was not changed; the others were");
        failed.get_or_insert(e);
    }
}

/// The redis-rs client for `config`: its URL, and for `rediss://` the TLS files it names.
pub(crate) fn open_redis(config: &ClientConfig) -> Result<redis::Client> {
    let url = crate::error::redact(&config.url);
    let invalid = |e: redis::RedisError| Error::Config(format!("invalid redis url {url}: {e}"));
    match tls_certificates(config)? {
        None => redis::Client::open(config.url.as_str()).map_err(invalid),
        Some(certs) => redis::Client::build_with_tls(config.url.as_str(), certs).map_err(invalid),
    }
}

/// The TLS files `config` names, read and checked; `None` when it names none.
///
/// # Errors
///
/// [`Error::Config`] when files are set for a URL without TLS, or one is unreadable or wrong.
pub(crate) fn tls_certificates(config: &ClientConfig) -> Result<Option<redis::TlsCertificates>> {
    if config.tls.is_empty() {
        return Ok(None);
    }
    if !config.url.starts_with("rediss://") && !config.url.starts_with("rediss+") {
        return Err(Error::Config(format!(
            "TLS files are set, but {} is not a rediss:// URL",
            crate::error::redact(&config.url)
        )));
    }
    // redis-rs builds its TLS settings from the process's default crypto provider; install
    // ours unless the application installed one (then this fails, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = match &config.tls.ca_file {
        Some(p) => {
            let pem = read("CA file", p)?;
            // redis-rs skips what is not a certificate, so a wrong file would fail later as an
            // unknown issuer, naming neither the file nor the mistake.
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| {
                    Error::Config(format!("the TLS CA file {} is not PEM: {e}", p.display()))
                })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "the TLS CA file {} holds no PEM certificate",
                    p.display()
                )));
            }
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("certificate", cert)?,
            client_key: read("key", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "a TLS client certificate needs its key, and a key its certificate".into(),
            ))
        }
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The oldest Redis the scripts run on: they use `ZMSCORE` and `ZADD GT` (6.2).
pub const MIN_REDIS: (u32, u32) = (6, 2);

/// Refuses, up front and with a clear message, a server older than [`MIN_REDIS`] (rather than
/// failing later inside a script) and one that may evict keys (see
/// [`ClientConfig::allow_eviction`]). Both come from `INFO`, which is in `@dangerous`: a user
/// whose ACL refuses it connects anyway, with a warning that neither was checked. Returns the
/// version, `(0, 0)` when unknown.
async fn check_server<C: redis::aio::ConnectionLike + Send>(
    con: &mut C,
    config: &ClientConfig,
) -> Result<(u32, u32)> {
    let url = config.url.as_str();
    let info: String = match redis::cmd("INFO")
        .arg("server")
        .arg("memory")
        .query_async(con)
        .await
    {
        Ok(info) => info,
        Err(e) if crate::ErrorKind::of_redis(&e) == crate::ErrorKind::Permission => {
            tracing::warn!(
                url = %crate::error::redact(url),
                "INFO is refused to this user (ACL): the Redis version and the eviction policy are not checked; \
                 the server must be Redis {}.{} or later with maxmemory-policy noeviction",
                MIN_REDIS.0,
                MIN_REDIS.1
            );
            return Ok((0, 0));
        }
        Err(e) => return Err(Error::redis(url)(e)),
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
    };
    let version = field("redis_version:");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if !version.is_empty() && found < MIN_REDIS {
        return Err(Error::Config(format!(
            "{} runs Redis {version}; queue needs Redis {}.{} or later",
            crate::error::redact(url),
            MIN_REDIS.0,
            MIN_REDIS.1
        )));
    }
    // A cluster node behind a plain URL answers most commands with MOVED, forever; a plain
    // server behind a cluster URL has no slot map. Both are the URL's mistake.
    let cluster_url = crate::endpoint::ClusterUrl::parse(url)
        .ok()
        .flatten()
        .is_some();
    match field("redis_mode:") {
        "cluster" if !cluster_url => {
            return Err(Error::Config(format!(
                "{} is a node of a Redis Cluster: connect with a cluster URL, \
                 redis+cluster://host:port[,host:port...]",
                crate::error::redact(url)
            )))
        }
        "standalone" | "sentinel" if cluster_url => {
            return Err(Error::Config(format!(
                "{} lists a server that is not in cluster mode ({}): use a redis:// URL for \
                 one server",
                crate::error::redact(url),
                field("redis_mode:")
            )))
        }
        _ => {}
    }
    let maxmemory: u64 = field("maxmemory:").parse().unwrap_or(0);
    let policy = field("maxmemory_policy:");
    if maxmemory > 0 && !policy.is_empty() && policy != "noeviction" && !config.allow_eviction {
        return Err(Error::Config(format!(
            "{} may evict keys (maxmemory {maxmemory} bytes, maxmemory-policy {policy}): a queue \
             loses whole sets of jobs that way, without an error. Set `maxmemory-policy \
             noeviction` on a queue instance (a full server then refuses writes with \
             OutOfMemory), or set ClientConfig::allow_eviction (QUEUE_ALLOW_EVICTION=1; the \
             CLI: --allow-eviction) for a client used only for the cache on a cache instance",
            crate::error::redact(url)
        )));
    }
    Ok(found)
}

/// The outcome of a dead job, built from its stored member.
fn dead_outcome(member: &[u8], queue: &str) -> Outcome {
    let decoded = codec::decode_member(member, queue);
    let id = codec::member_id(member).unwrap_or_else(|_| JobId::from_wire(String::new()));
    let (error, at) = match &decoded {
        Ok(job) => (
            job.last_error().map(|f| f.summary()),
            job.last_error().map(|f| f.at_ms).unwrap_or(0),
        ),
        Err(e) => (Some(e.to_string()), 0),
    };
    Outcome {
        id,
        state: JobState::Dead,
        finished_ms: at,
        result: None,
        error,
        job: Some(member.to_vec()),
    }
}

#[cfg(test)]
mod prelude_agrees {
    /// The scripts' default cap is the client's: one number, written twice (Rust and Lua).
    #[test]
    fn the_scripts_default_payload_cap_is_the_clients() {
        let line = format!("local DEFAULT_MAX_PAYLOAD = {}", super::DEFAULT_MAX_PAYLOAD);
        assert!(include_str!("../prelude.lua").contains(&line));
    }
}
