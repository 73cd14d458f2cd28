//! `queue stats [--watch]`.

use std::process::ExitCode;
use std::time::Duration;

use queue::admin::Admin;
use queue::admin::QueueStats;
use queue::admin::ServerInfo;
use serde::Serialize;

use crate::output::{bytes, human, printable, Out, Table};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Refresh until interrupted
    #[arg(long)]
    watch: bool,
    /// Refresh interval with --watch (at least 100ms)
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    interval: Duration,
    /// Only these queues (default: all)
    #[arg(long = "queue", short = 'q')]
    queues: Vec<String>,
}

/// A refresh interval: a duration of at least 100 ms (a shorter one would only spin against
/// Redis; 0s once did).
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::output::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!(
            "--interval {s} is shorter than 100ms: a refresh that often only loads Redis"
        ));
    }
    Ok(d)
}

#[derive(Debug, Serialize)]
struct Report {
    redis: ServerInfo,
    queues: Vec<QueueStats>,
}

pub async fn collect(
    admin: &Admin,
    only: &[String],
) -> anyhow::Result<(ServerInfo, Vec<QueueStats>)> {
    let names = if only.is_empty() {
        admin.queues().await?
    } else {
        only.to_vec()
    };
    let server = admin.server().await?;
    let mut stats = Vec::with_capacity(names.len());
    for q in &names {
        if !only.is_empty() {
            admin.require_queue(q).await?;
        }
        stats.push(admin.stats(q).await?);
    }
    Ok((server, stats))
}

pub fn render(out: &Out, server: &ServerInfo, stats: &[QueueStats]) -> String {
    let mut t = Table::new(&[
        "QUEUE",
        "STATE",
        "PENDING",
        "SCHEDULED",
        "RETRYING",
        "RECOVERED",
        "ACTIVE",
        "DEAD",
        "COMPLETED",
        "DONE 1m",
        "FAILED 1m",
        "DONE 1h",
        "FAILED 1h",
        "ERROR 1h",
        "LATENCY",
    ]);
    for s in stats {
        let state = if s.paused {
            out.yellow("paused")
        } else {
            out.green("running")
        };
        let err = format!("{:.1}%", s.error_rate_1h * 100.0);
        let err = if s.error_rate_1h > 0.05 {
            out.red(&err)
        } else {
            err
        };
        let dead = if s.dead > 0 {
            out.red(&s.dead.to_string())
        } else {
            "0".into()
        };
        t.row(vec![
            printable(&s.queue).into_owned(),
            state,
            s.pending.to_string(),
            s.scheduled.to_string(),
            s.retrying.to_string(),
            s.recovered.to_string(),
            s.active.to_string(),
            dead,
            s.completed.to_string(),
            s.processed_1m.to_string(),
            s.failed_1m.to_string(),
            s.processed_1h.to_string(),
            s.failed_1h.to_string(),
            err,
            s.oldest_pending_ms
                .map(|ms| human(ms as u64))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let limit = if server.maxmemory == 0 {
        "no limit".to_string()
    } else {
        bytes(server.maxmemory)
    };
    let mut s = format!(
        "Redis {} · memory {} / {} · policy {} · {} clients\n",
        server.version,
        bytes(server.used_memory),
        limit,
        server.maxmemory_policy,
        server.connected_clients
    );
    if t.is_empty() {
        s.push_str(&out.dim("no queues yet: enqueue a job or start a worker"));
    } else {
        s.push_str(&t.render(out));
    }
    s
}

pub async fn run(g: &Global, out: Out, args: Args) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    loop {
        let (server, stats) = collect(&admin, &args.queues).await?;
        if out.json {
            out.json(&Report {
                redis: server,
                queues: stats,
            })?;
        } else {
            if args.watch && out.color {
                // Clear the screen and home the cursor between refreshes.
                print!("\x1b[2J\x1b[H");
            }
            out.line(&render(&out, &server, &stats))?;
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}
