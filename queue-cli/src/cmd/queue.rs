//! `queue queues` and `queue queue inspect|pause|resume|purge|rm|split`.

use std::process::ExitCode;

use anyhow::bail;
use queue::admin::Admin;
use queue::admin::State;

use crate::output::{confirm, printable, rerun_with, Out};
use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Counts, throughput and state of one queue
    Inspect { name: String },
    /// Stop workers from leasing jobs of this queue (running jobs finish)
    Pause { name: String },
    /// Let workers lease jobs of this queue again
    Resume { name: String },
    /// Delete the jobs of a queue in one state (or every state but active)
    Purge {
        name: String,
        /// pending, scheduled, retrying, recovered, dead or completed (default: all of them)
        #[arg(long)]
        state: Option<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Split a queue in shards, each its own hash tag, so that on a Redis Cluster it spreads
    /// over several masters (once per queue; restart the workers that serve it)
    Split {
        name: String,
        /// How many shards (2 to 64)
        shards: u16,
    },
    /// Remove a queue and all its keys
    Rm {
        name: String,
        /// Remove it even if it still holds jobs
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

pub async fn list(g: &Global, out: Out) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    let (server, stats) = super::stats::collect(&admin, &[]).await?;
    if out.json {
        out.json(&stats)?;
    } else {
        out.line(&super::stats::render(&out, &server, &stats))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(g: &Global, out: Out, cmd: Command) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    match cmd {
        Command::Inspect { name } => {
            admin.require_queue(&name).await?;
            let s = admin.stats(&name).await?;
            if out.json {
                out.json(&s)?;
            } else {
                let server = admin.server().await?;
                out.line(&super::stats::render(
                    &out,
                    &server,
                    std::slice::from_ref(&s),
                ))?;
            }
        }
        Command::Pause { name } => {
            admin.require_queue(&name).await?;
            admin.client().pause(&name).await?;
            say(
                &out,
                &name,
                "paused",
                "workers lease nothing from it until `queue queue resume`",
            )?;
        }
        Command::Resume { name } => {
            admin.require_queue(&name).await?;
            admin.client().resume(&name).await?;
            say(&out, &name, "resumed", "workers lease from it again")?;
        }
        Command::Purge { name, state, yes } => {
            admin.require_queue(&name).await?;
            let states = match state {
                Some(s) => vec![State::parse(&s)?],
                None => State::ALL
                    .into_iter()
                    .filter(|s| *s != State::Active)
                    .collect(),
            };
            if states.contains(&State::Active) {
                bail!("running (active) jobs cannot be purged: they finish, or are recovered when their lease expires");
            }
            let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
            confirm(
                &format!("delete every {} job of queue {name:?}", names.join("/")),
                yes,
            )?;
            let mut total = 0;
            for s in states {
                total += purge_all(&admin, &name, s, None).await?;
            }
            if out.json {
                out.json(&serde_json::json!({ "queue": name, "deleted": total }))?;
            } else {
                out.line(&format!("deleted {total} jobs from {}", printable(&name)))?;
            }
        }
        Command::Split { name, shards } => {
            admin.client().split_queue(&name, shards).await?;
            if out.json {
                out.json(&serde_json::json!({ "queue": name, "shards": shards }))?;
            } else {
                out.line(&format!(
                    "queue {} is split in {shards} shards: producers send jobs to them within \
                     5 s; restart the workers that serve it so that they serve every shard",
                    printable(&name)
                ))?;
            }
        }
        Command::Rm { name, force, yes } => {
            admin.require_queue(&name).await?;
            let s = admin.stats(&name).await?;
            let held = s.pending + s.scheduled + s.retrying + s.recovered + s.active + s.dead;
            if held > 0 && !force {
                bail!(
                    "queue {name:?} is not empty ({} pending, {} scheduled, {} retrying, {} recovered, {} active, {} dead); to remove it with its jobs, re-run:\n  {}",
                    s.pending,
                    s.scheduled,
                    s.retrying,
                    s.recovered,
                    s.active,
                    s.dead,
                    rerun_with(&["--force"])
                );
            }
            confirm(&format!("remove queue {name:?} and all its keys"), yes)?;
            admin.remove_queue(&name).await?;
            say(&out, &name, "removed", "")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn say(out: &Out, queue: &str, what: &str, detail: &str) -> anyhow::Result<()> {
    if out.json {
        out.json(&serde_json::json!({ "queue": queue, "result": what }))
    } else if detail.is_empty() {
        out.line(&format!("queue {} {what}", printable(queue)))
    } else {
        out.line(&format!("queue {} {what}: {detail}", printable(queue)))
    }
}

/// Empties one state in bounded steps, with a progress bar on a terminal.
pub async fn purge_all(
    admin: &Admin,
    queue: &str,
    state: State,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let n = admin
            .purge_some(queue, state, queue::wire::MAX_BATCH)
            .await?;
        total += n;
        if let Some(b) = bar {
            b.inc(n);
        }
        if n == 0 {
            return Ok(total);
        }
    }
}
