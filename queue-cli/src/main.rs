//! The `queue` command: benchmark, inspect and operate queues.

mod cmd;
mod error;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Out;

#[derive(Debug, Parser)]
#[command(
    name = "queue",
    version,
    about = "Crash-safe distributed background jobs over Redis",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes. Its `Debug` shows the Redis URL redacted.
#[derive(Clone, clap::Args)]
pub struct Global {
    /// Redis URL [env: REDIS_URL] [default: redis://127.0.0.1:6379; `bench` starts a throwaway server instead]
    #[arg(long, global = true, env = "REDIS_URL", hide_env = true)]
    pub redis_url: Option<String>,
    /// Key namespace
    #[arg(long, global = true, env = "QUEUE_NAMESPACE", default_value = "queue")]
    pub namespace: String,
    /// Print JSON (one document, an error too; `stats --watch` and `events` print one per line)
    #[arg(long, global = true)]
    pub json: bool,
    /// Connect even to a Redis that may evict keys (a maxmemory-policy other than noeviction),
    /// e.g. to inspect the damage [env: QUEUE_ALLOW_EVICTION=1]
    #[arg(
        long,
        global = true,
        env = "QUEUE_ALLOW_EVICTION",
        hide_env = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_eviction: bool,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field is named, so a new flag does not compile until someone decides whether
        // it is a secret (a derived Debug printed the URL's password).
        let Global {
            redis_url,
            namespace,
            json,
            allow_eviction,
        } = self;
        f.debug_struct("Global")
            .field("redis_url", &redis_url.as_deref().map(queue::admin::redact))
            .field("namespace", namespace)
            .field("json", json)
            .field("allow_eviction", allow_eviction)
            .finish()
    }
}

impl Global {
    pub fn url(&self) -> String {
        self.redis_url
            .clone()
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
    }

    /// Connects with these settings; the namespace is validated before anything is sent. A
    /// server that may evict keys is refused unless `--allow-eviction` says otherwise.
    pub async fn connect(&self) -> anyhow::Result<queue::admin::Admin> {
        self.connect_with(self.allow_eviction).await
    }

    /// [`Global::connect`] to any server, evicting or not: for `health`, which reports the
    /// eviction policy as one of its checks instead of failing on it.
    pub async fn connect_allowing_eviction(&self) -> anyhow::Result<queue::admin::Admin> {
        self.connect_with(true).await
    }

    async fn connect_with(&self, allow_eviction: bool) -> anyhow::Result<queue::admin::Admin> {
        let mut config = queue::ClientConfig::new(self.url());
        config.namespace = self.namespace.clone();
        config.connect_timeout = std::time::Duration::from_secs(2);
        config.allow_eviction = allow_eviction;
        // TLS files from the environment, as a worker's `from_env` reads them.
        config.tls = queue::ClientConfig::from_env().tls;
        let client = queue::Client::connect_with(config).await?;
        Ok(queue::admin::Admin::new(client))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counts by state, throughput, error rate and latency of every queue, and Redis health
    Stats(cmd::stats::Args),
    /// List queues with their counts
    Queues,
    /// A queue's metrics history: completed, failed, retried, dead, wait and run-time percentiles
    History(cmd::history::Args),
    /// Inspect, pause, resume, purge or remove one queue
    #[command(subcommand)]
    Queue(cmd::queue::Command),
    /// List the jobs of a queue in one state
    Jobs(cmd::jobs::Args),
    /// Show, retry or delete jobs
    #[command(subcommand)]
    Job(cmd::job::Command),
    /// Enqueue a job with JSON arguments (the same MessagePack a Rust producer writes)
    Enqueue(cmd::enqueue::Args),
    /// Live and dead worker processes, from their heartbeats
    Workers,
    /// Lifecycle events of a queue's jobs (enqueued, started, completed, failed, retrying, dead)
    Events(cmd::events::Args),
    /// Cache metrics: hits, misses, loads and invalidations per policy
    #[command(subcommand)]
    Cache(cmd::cache::Command),
    /// Rate-limit metrics: allowed and rejected per limit
    #[command(subcommand)]
    Ratelimit(cmd::ratelimit::Command),
    /// List, pause, resume or trigger cron schedules
    #[command(subcommand)]
    Cron(cmd::cron::Command),
    /// Check health thresholds; exits 1 when any is breached (for cron, probes and CI)
    Health(cmd::health::Args),
    /// End-to-end benchmark: enqueue, drain, latency, memory and Redis CPU per job
    Bench(cmd::bench::Args),
    /// A live terminal dashboard: queues, throughput, jobs by state; pause, resume, retry
    Dash(cmd::dash::Args),
    /// Serve the web dashboard (overview, queues, jobs, workers, cron) on an address
    Web(cmd::web::Args),
    /// Print the least-privilege Redis users (producer, worker, operator) as ACL SETUSER commands
    Acl(cmd::acl::Args),
    /// Print shell completions
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| error::usage(e));
    let out = Out::new(cli.global.json);
    let secrets = error::Secrets::new(cli.global.redis_url.as_deref());
    match run(cli, out) {
        Ok(code) => code,
        Err(e) => error::report(&e, out, &secrets),
    }
}

fn run(cli: Cli, out: Out) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        // redis-rs warns once per attempt of its own retries (dozens in one command while a
        // cluster fails over); the command's own error says what failed.
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,redis=error".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or a pipe.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "queue", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Acl(a) = cli.command {
        return cmd::acl::run(&cli.global, out, a);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let g = cli.global;
    rt.block_on(async move {
        match cli.command {
            Command::Stats(a) => cmd::stats::run(&g, out, a).await,
            Command::Queues => cmd::queue::list(&g, out).await,
            Command::History(a) => cmd::history::run(&g, out, a).await,
            Command::Queue(c) => cmd::queue::run(&g, out, c).await,
            Command::Jobs(a) => cmd::jobs::run(&g, out, a).await,
            Command::Job(c) => cmd::job::run(&g, out, c).await,
            Command::Enqueue(a) => cmd::enqueue::run(&g, out, a).await,
            Command::Workers => cmd::workers::run(&g, out).await,
            Command::Cron(c) => cmd::cron::run(&g, out, c).await,
            Command::Events(a) => cmd::events::run(&g, out, a).await,
            Command::Ratelimit(c) => cmd::ratelimit::run(&g, out, c).await,
            Command::Cache(c) => cmd::cache::run(&g, out, c).await,
            Command::Health(a) => cmd::health::run(&g, out, a).await,
            Command::Bench(a) => cmd::bench::run(&g, out, a).await,
            Command::Dash(a) => cmd::dash::run(&g, out, a).await,
            Command::Web(a) => cmd::web::run(&g, out, a).await,
            Command::Completions { .. } | Command::Acl(_) => Ok(ExitCode::SUCCESS),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_flags_hides_the_redis_password() {
        for url in [
            "redis://default:s3cr3t-pw@127.0.0.1:6379/0",
            "redis+unix:///run/redis.sock?pass=s3cr3t-pw",
        ] {
            let cli = <Cli as Parser>::try_parse_from(["queue", "--redis-url", url, "workers"])
                .expect("parses");
            let shown = format!("{cli:?}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}
