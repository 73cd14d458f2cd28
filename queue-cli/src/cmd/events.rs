//! `queue events <queue> [--follow]`: the lifecycle log of a queue's jobs.

use std::process::ExitCode;
use std::time::Duration;

use queue::events::gaps;
use queue::events::Lifecycle;
use queue::events::LifecycleEvent;

use crate::output::{printable, Out};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue
    queue: String,
    /// Keep printing new events until interrupted
    #[arg(long, short = 'f')]
    follow: bool,
    /// How many past events to print first
    #[arg(long, default_value_t = 20)]
    last: usize,
    /// Print what came after this stream entry id instead (resume where you left off): the
    /// `entry` of an event, `<ms>-<n>` or `<ms>`
    #[arg(long, conflicts_with = "last", value_parser = parse_entry)]
    since: Option<String>,
    /// Turn the queue's lifecycle events on (they are off by default)
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Turn them off
    #[arg(long)]
    disable: bool,
}

/// A stream entry id as `XRANGE` takes it: `<ms>` or `<ms>-<n>`, both numbers.
fn parse_entry(s: &str) -> Result<String, String> {
    let number = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    let ok = match s.split_once('-') {
        Some((ms, n)) => number(ms) && number(n),
        None => number(s),
    };
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is no event entry: give the `entry` of an event (`<ms>-<n>`, e.g. 1764150000000-0)"
        ))
    }
}

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    let life = Lifecycle::new(admin.client().clone());
    if a.enable || a.disable {
        admin.client().keys(&a.queue)?;
        life.set_enabled(&a.queue, a.enable).await?;
        admin.client().register_queues([&a.queue]).await?;
        let state = if a.enable { "on" } else { "off" };
        if out.json {
            out.json(&serde_json::json!({ "queue": a.queue, "events": state }))?;
        } else {
            out.line(&format!(
                "lifecycle events of {} are {state}",
                printable(&a.queue)
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    admin.require_queue(&a.queue).await?;
    // A split queue keeps one log per part, each with its own sequence numbers: reading them
    // as one would show gaps that are not there.
    let parts = admin.client().shards_of(&a.queue).await?;
    if parts.len() > 1 {
        let names: Vec<String> = parts
            .iter()
            .map(|p| format!("'{}'", printable(p)))
            .collect();
        anyhow::bail!(
            "queue {} is split in {} shards, and each part keeps its own event log: read one \
             with `queue events PART`, PART one of {}",
            printable(&a.queue),
            parts.len() - 1,
            names.join(", ")
        );
    }
    let mut batch = match &a.since {
        Some(entry) => life.read(&a.queue, Some(entry), 10_000).await?,
        None => life.tail(&a.queue, a.last).await?,
    };
    // Gaps are reported between events this command saw; `--since` callers compare the first
    // sequence number with the last one they saw (JSON output carries it).
    let mut last_seq: Option<u64> = None;
    let mut cursor = "$".to_string();
    loop {
        for gap in gaps(last_seq, &batch) {
            if out.json {
                out.json(&serde_json::json!({ "gap": gap, "missed": gap.len() }))?;
            } else {
                out.line(&out.yellow(&format!(
                    "-- gap: {} event(s) missed (seq {}..{}): trimmed from the log or published while away --",
                    gap.len(),
                    gap.from,
                    gap.to
                )))?;
            }
        }
        for e in &batch {
            print_event(&out, e)?;
            last_seq = Some(e.seq);
            cursor = e.entry.clone();
        }
        if !a.follow {
            if batch.is_empty() && !out.json {
                out.line(&out.dim(&format!(
                    "no events for {} (turn them on with `queue events {} --enable`)",
                    printable(&a.queue),
                    crate::output::shell_word(&a.queue)
                )))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        batch = tokio::select! {
            r = life.follow(&a.queue, &cursor, Duration::from_secs(5)) => r?,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
    }
}

fn print_event(out: &Out, e: &LifecycleEvent) -> anyhow::Result<()> {
    if out.json {
        return out.json(e);
    }
    let at = chrono::DateTime::from_timestamp_millis(e.at)
        .map(|d| d.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let kind = match e.kind.as_str() {
        "completed" => out.green(&e.kind),
        "failed" | "dead" => out.red(&e.kind),
        "retrying" | "deduplicated" | "discarded" => out.yellow(&e.kind),
        _ => printable(&e.kind).into_owned(),
    };
    let ids = if e.ids.len() <= 3 {
        printable(&e.ids.join(" ")).into_owned()
    } else {
        format!(
            "{} … {} ({} jobs)",
            printable(&e.ids[0]),
            printable(&e.ids[e.ids.len() - 1]),
            e.ids.len()
        )
    };
    let err = e
        .error
        .as_deref()
        .map(|m| format!("  {}", out.red(&printable(m))))
        .unwrap_or_default();
    out.line(&format!("{at}  #{:<6} {kind:<12} {ids}{err}", e.seq))
}
