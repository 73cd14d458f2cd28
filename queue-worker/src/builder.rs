//! Worker configuration, from code and from the environment.

use std::sync::Arc;
use std::time::Duration;

use queue_core::{Client, ClientConfig, Retention};

use crate::error::{Error, Result};
use crate::middleware::Middleware;
use crate::registry::Registry;
use crate::worker::Worker;

/// How a worker chooses among several queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOrder {
    /// Always drain earlier queues first.
    Strict,
    /// Pick the first queue to try at random, in proportion to the weights (asynq's default):
    /// no queue starves.
    #[default]
    Weighted,
}

/// Everything a worker needs to know; build one with [`WorkerBuilder`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues and their weights.
    pub queues: Vec<(String, u32)>,
    /// How to choose among queues.
    pub order: QueueOrder,
    /// Most jobs run at once (default 5, the original plan's `QUEUE_CONFIG`).
    pub concurrency: usize,
    /// Lease length: a job whose worker stops heartbeating for this long is recovered
    /// (default 3 s). A worker whose process dies is found out sooner, the moment its
    /// connection closes (its jobs run again within about a heartbeat); the lease is for a
    /// worker that stalls or loses its network.
    pub lease: Duration,
    /// How often this worker extends its leases and looks for workers that are gone, in one
    /// script call per queue (default 1 s, a third of the lease: a beat may be 2 s late before
    /// a live worker's jobs are taken for lost; see docs/RELIABILITY.md).
    pub heartbeat: Duration,
    /// How long graceful shutdown waits for running jobs before handing them back.
    pub grace: Duration,
    /// What to keep of completed and dead jobs.
    pub retention: Retention,
    /// Longest an idle worker sleeps without a wake-up before it looks again (default 2 s): a
    /// safety net for a lost wake marker, not how work is found (BullMQ's `drainDelay`).
    pub idle_recheck: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: vec![(queue_core::wire::DEFAULT_QUEUE.to_string(), 1)],
            order: QueueOrder::Weighted,
            concurrency: 5,
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            retention: Retention::default(),
            idle_recheck: Duration::from_secs(2),
        }
    }
}

/// Builds a [`Worker`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let worker = queue_worker::WorkerBuilder::from_env()
///     .queue("emails", 3)
///     .queue("default", 1)
///     .concurrency(20)
///     .build()
///     .await?;
/// worker.run_until_signal().await?;
/// # Ok(()) }
/// ```
pub struct WorkerBuilder {
    client: ClientConfig,
    config: WorkerConfig,
    queues_set: bool,
    middlewares: Vec<Arc<dyn Middleware>>,
    existing: Option<Client>,
    schedules: Vec<queue_core::cron::Schedule>,
    tasks: Vec<(String, crate::scheduler::MaintenanceTask)>,
    scheduler: bool,
    maintenance_cron: String,
    registry: Option<Registry>,
    http_addr: Option<String>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client settings print their URL redacted (`ClientConfig`'s own Debug), so the
        // builder can show where it connects without showing a password.
        f.debug_struct("WorkerBuilder")
            .field("client", &self.client)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// A builder connecting to `url`.
    pub fn new(url: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            client: ClientConfig::new(url),
            config: WorkerConfig::default(),
            queues_set: false,
            middlewares: Vec::new(),
            existing: None,
            schedules: Vec::new(),
            tasks: Vec::new(),
            scheduler: true,
            maintenance_cron: crate::scheduler::MAINTENANCE_CRON.to_string(),
            registry: None,
            http_addr: None,
        }
    }

    /// A builder sharing an existing client's connection.
    pub fn with_client(client: Client) -> WorkerBuilder {
        let mut b = WorkerBuilder::new(client.config().url.clone());
        b.client = client.config().clone();
        b.existing = Some(client);
        b
    }

    /// A builder from the environment: `REDIS_URL`, `QUEUE_NAMESPACE`, `QUEUE_QUEUES`
    /// (`emails:3,default:1`), `QUEUE_CONCURRENCY`, `QUEUE_HTTP_ADDR` (see
    /// [`WorkerBuilder::serve_http`]). Invalid values are reported by [`WorkerBuilder::build`].
    pub fn from_env() -> WorkerBuilder {
        let mut b = WorkerBuilder::new(String::new());
        b.client = ClientConfig::from_env();
        b.env_overrides()
    }

    fn env_overrides(mut self) -> WorkerBuilder {
        if let Ok(qs) = std::env::var("QUEUE_QUEUES") {
            for part in qs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, weight) = match part.split_once(':') {
                    Some((n, w)) => (n, w.parse().unwrap_or(0)),
                    None => (part, 1),
                };
                self = self.queue(name, weight);
            }
        }
        if let Ok(c) = std::env::var("QUEUE_CONCURRENCY") {
            self.config.concurrency = c.parse().unwrap_or(0);
        }
        if let Ok(a) = std::env::var("QUEUE_HTTP_ADDR") {
            if !a.trim().is_empty() {
                self.http_addr = Some(a.trim().to_string());
            }
        }
        self
    }

    /// Serves `/metrics` (Prometheus text format), `/livez` and `/readyz` on `addr`
    /// (`0.0.0.0:9090`; port 0 picks a free one, see [`Worker::http_addr`]) while the worker
    /// runs. Needs the `http` feature; without it [`WorkerBuilder::build`] refuses the option.
    ///
    /// [`Worker::http_addr`]: crate::Worker::http_addr
    pub fn serve_http(mut self, addr: impl Into<String>) -> Self {
        self.http_addr = Some(addr.into());
        self
    }

    /// Serves `queue` with `weight` (weights matter with [`QueueOrder::Weighted`]). The first
    /// call replaces the default queue list.
    pub fn queue(mut self, queue: impl Into<String>, weight: u32) -> Self {
        if !self.queues_set {
            self.config.queues.clear();
            self.queues_set = true;
        }
        self.config.queues.push((queue.into(), weight));
        self
    }

    /// Sets how queues are chosen.
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.config.order = order;
        self
    }

    /// Sets the most jobs run at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// Sets the lease length; the heartbeat becomes a third of it, as in the defaults (call
    /// [`WorkerBuilder::heartbeat`] afterwards to choose another).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self.config.heartbeat = lease / 3;
        self
    }

    /// Sets how often leases are extended and expired ones looked for (at most 40% of the
    /// lease: what is left is how late a beat may be before a live worker's jobs are taken for
    /// lost, and it must exceed the watch gap that tells a Redis outage from a dead worker).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.config.heartbeat = every;
        self
    }

    /// Sets how long an idle worker sleeps before it looks again without being woken (see
    /// [`WorkerConfig::idle_recheck`]).
    pub fn idle_recheck(mut self, every: Duration) -> Self {
        self.config.idle_recheck = every;
        self
    }

    /// Sets the graceful-shutdown grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// Sets the retention policy.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.config.retention = retention;
        self
    }

    /// Sets the key namespace.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.client.namespace = ns.into();
        self
    }

    /// Adds a middleware; user middlewares run inside the built-ins, in the order added.
    pub fn layer(mut self, m: impl Middleware) -> Self {
        self.middlewares.push(Arc::new(m));
        self
    }

    /// Adds a schedule registered in code (beside those declared with `#[job(cron = ...)]`).
    pub fn schedule(mut self, schedule: queue_core::cron::Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Adds a task to the built-in maintenance schedule (every minute, on one worker).
    pub fn maintenance_task<F, Fut>(mut self, name: impl Into<String>, task: F) -> Self
    where
        F: Fn(Client) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let task: crate::scheduler::MaintenanceTask = Arc::new(move |c| Box::pin(task(c)));
        self.tasks.push((name.into(), task));
        self
    }

    /// How often the maintenance schedule runs (a cron expression; default every minute).
    pub fn maintenance_cron(mut self, expr: impl Into<String>) -> Self {
        self.maintenance_cron = expr.into();
        self
    }

    /// Whether this worker runs the scheduler (cron ticks and maintenance); on by default, so
    /// every worker covers for the others.
    pub fn scheduler(mut self, on: bool) -> Self {
        self.scheduler = on;
        self
    }

    fn validate(&self) -> Result<()> {
        let c = &self.config;
        if c.concurrency == 0 || c.concurrency > 10_000 {
            return Err(Error::Config(format!(
                "concurrency must be 1..=10000, got {}",
                c.concurrency
            )));
        }
        if c.queues.is_empty() {
            return Err(Error::Config("no queues to serve".into()));
        }
        if let Some((q, _)) = c.queues.iter().find(|(_, w)| *w == 0) {
            return Err(Error::Config(format!(
                "queue {q:?} has weight 0; weights must be at least 1"
            )));
        }
        let mut names: Vec<&str> = c.queues.iter().map(|(q, _)| q.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::Config("a queue is listed twice".into()));
        }
        if c.lease < Duration::from_millis(100)
            || c.heartbeat.is_zero()
            || c.heartbeat * 5 > c.lease * 2
        {
            return Err(Error::Config(
                "lease must be at least 100 ms and the heartbeat at most 40% of it".into(),
            ));
        }
        if self.client.url.is_empty() {
            return Err(Error::Config("no Redis URL: set REDIS_URL".into()));
        }
        Ok(())
    }

    /// Runs only the handlers of `registry` instead of every `#[job]` linked into the binary
    /// (see [`Registry::with_jobs`]): one binary can hold workers for different services, and
    /// tests can give each worker the handlers its scenario needs.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Validates the configuration and the handler registry, then connects.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], [`Error::Registry`] before connecting; [`Error::Core`] when Redis is
    /// unreachable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written.
    pub async fn build(self) -> Result<Worker> {
        self.validate()?;
        let http = self.bind_http()?;
        let registry = match self.registry {
            Some(r) => r,
            None => Registry::discover()?,
        };
        let mut schedules = registry.schedules()?;
        schedules.extend(self.schedules);
        let mut names: Vec<&str> = schedules.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config(format!("two schedules are named {:?}", w[0])));
        }
        for (q, _) in &self.config.queues {
            queue_core::wire::QueueKeys::new(&self.client.namespace, q)?;
        }
        let client = match self.existing {
            Some(c) => c,
            None => Client::connect_with(self.client).await?,
        };
        let maintenance = crate::scheduler::maintenance_schedule(&self.maintenance_cron)?;
        let scheduler = self.scheduler.then(|| crate::scheduler::Scheduler {
            client: client.clone(),
            schedules,
            tasks: self.tasks,
            retention: self.config.retention,
            maintenance,
        });
        // A split queue is served whole: itself (what it held before the split) and each
        // shard, as one group the fetch rotates through.
        let mut served = Vec::new();
        for (group, (q, w)) in self.config.queues.iter().enumerate() {
            for part in client.shards_of(q).await? {
                served.push((part, *w, group));
            }
        }
        let worker = Worker::new(
            client,
            self.config,
            served,
            registry,
            self.middlewares,
            scheduler,
        )?;
        match http {
            Some(l) => Ok(worker.with_http(l)),
            None => Ok(worker),
        }
    }

    /// Binds the HTTP address, so that a wrong one fails the build instead of the run.
    fn bind_http(&self) -> Result<Option<std::net::TcpListener>> {
        let Some(addr) = &self.http_addr else {
            return Ok(None);
        };
        if !cfg!(feature = "http") {
            return Err(Error::Config(format!(
                "serve_http / QUEUE_HTTP_ADDR ({addr}) needs queue-worker's `http` feature"
            )));
        }
        let parsed: std::net::SocketAddr = addr.parse().map_err(|e| {
            Error::Config(format!(
                "QUEUE_HTTP_ADDR / serve_http: {addr:?} is no socket address like 0.0.0.0:9090 ({e})"
            ))
        })?;
        let listener = std::net::TcpListener::bind(parsed)
            .map_err(|e| Error::Config(format!("cannot listen on {addr} for /metrics: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Config(format!("cannot listen on {addr} for /metrics: {e}")))?;
        Ok(Some(listener))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_where_it_connects_but_no_password() {
        for url in [
            "redis://default:s3cr3t-pw@127.0.0.1:6379/0",
            "redis+unix:///run/redis.sock?user=app&pass=s3cr3t-pw",
        ] {
            let shown = format!("{:?}", WorkerBuilder::new(url).concurrency(3));
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("concurrency: 3"), "{shown}");
        }
    }
}
