//! The `queue` command: benchmark, inspect and operate queues.

mod cmd;
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

/// Flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Redis URL [env: REDIS_URL] [default: redis://127.0.0.1:6379; `bench` starts a throwaway server instead]
    #[arg(long, global = true, env = "REDIS_URL", hide_env = true)]
    pub redis_url: Option<String>,
    /// Key namespace
    #[arg(long, global = true, env = "QUEUE_NAMESPACE", default_value = "queue")]
    pub namespace: String,
    /// Print JSON (one document; `stats --watch` prints one per line)
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    pub fn url(&self) -> String {
        self.redis_url
            .clone()
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
    }

    /// Connects with these settings; the namespace is validated before anything is sent.
    pub async fn connect(&self) -> anyhow::Result<queue::admin::Admin> {
        let mut config = queue::ClientConfig::new(self.url());
        config.namespace = self.namespace.clone();
        config.connect_timeout = std::time::Duration::from_secs(2);
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
    /// Print shell completions
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out::new(cli.global.json);
    match run(cli, out) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`queue jobs ... | head`) is not an error worth reporting.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("{} {}", out.red("error:"), explain(&e));
            ExitCode::FAILURE
        }
    }
}

/// One line (or a few) saying what is wrong and what to do; never a debug dump.
fn explain(e: &anyhow::Error) -> String {
    use queue::Error as E;
    let context: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
    let base = match e.chain().find_map(|c| c.downcast_ref::<E>()) {
        Some(E::Unreachable { url, source, .. }) => format!(
            "cannot reach Redis at {url} ({source}); is redis-server running? Set --redis-url or REDIS_URL"
        ),
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::Auth => {
            format!("Redis refused the credentials ({source}); put them in the URL: redis://user:password@host:port")
        }
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::Permission => {
            format!("Redis refused the command for this user ({source}); the ACL user needs the commands and keys of the queue")
        }
        Some(err @ E::Redis { source, .. }) if err.kind() == queue::ErrorKind::OutOfMemory => {
            format!("Redis is out of memory and refuses writes ({source}); raise maxmemory or free memory")
        }
        Some(E::NotFound(what)) => format!("no such {what}"),
        _ => e.to_string(),
    };
    if context.is_empty() || base != e.to_string() {
        base
    } else {
        format!("{base}: {}", context.join(": "))
    }
}

fn run(cli: Cli, out: Out) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Command::Completions { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cmd, "queue", &mut std::io::stdout());
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let g = cli.global;
    rt.block_on(async move {
        match cli.command {
            Command::Stats(a) => cmd::stats::run(&g, out, a).await,
            Command::Queues => cmd::queue::list(&g, out).await,
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
            Command::Completions { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}
