//! `queue history QUEUE [--since 1h] [--step 5m] [--name JOB]`: the metrics history, in steps.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use queue::admin::Counts;
use serde::Serialize;

use crate::output::{printable, Out, Table};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue
    queue: String,
    /// How far back, ending with the current minute (at most 72h)
    #[arg(long, default_value = "1h", value_parser = crate::output::parse_duration)]
    since: Duration,
    /// One row per step (a whole number of minutes; default: the span in at most 60 rows)
    #[arg(long, value_parser = crate::output::parse_duration)]
    step: Option<Duration>,
    /// Only this job name (default: every name added up)
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Serialize)]
struct Step {
    /// Start of the step, Unix ms.
    at_ms: i64,
    #[serde(flatten)]
    counts: Counts,
    wait_p50_ms: Option<f64>,
    wait_p99_ms: Option<f64>,
    run_p50_ms: Option<f64>,
    run_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    queue: String,
    step_ms: i64,
    /// Every job name seen in the span, with its totals.
    names: BTreeMap<String, Counts>,
    steps: Vec<Step>,
}

/// The longest span shown: the 72 hours the history is sure to hold.
const MAX_SPAN_MIN: i64 = 72 * 60;

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    let minute = 60_000i64;
    let span_min = (a.since.as_millis() as i64 / minute).max(1);
    if span_min > MAX_SPAN_MIN {
        anyhow::bail!("--since is at most 72h (the history keeps 72 hours)");
    }
    let step_min = match a.step {
        Some(s) => {
            let s = s.as_millis() as i64;
            if s < minute || s % minute != 0 {
                anyhow::bail!("--step must be a whole number of minutes (1m, 5m, 1h), not {s} ms");
            }
            s / minute
        }
        // At most 60 rows, in whole minutes.
        None => (span_min + 59) / 60,
    };
    let admin = g.connect().await?;
    admin.require_queue(&a.queue).await?;
    // The current minute and the `span_min - 1` before it: exactly the span.
    let now = chrono::Utc::now().timestamp_millis();
    let from = (queue::admin::minute_of(now) - span_min + 1) * minute;
    let minutes = admin.history(&a.queue, from, now).await?;
    let mut names: BTreeMap<String, Counts> = BTreeMap::new();
    for m in &minutes {
        for (name, c) in &m.names {
            names.entry(name.clone()).or_default().merge(c);
        }
    }
    let steps: Vec<Step> =
        queue::admin::history_steps(&minutes, step_min as usize, a.name.as_deref())
            .into_iter()
            .map(|s| Step {
                at_ms: s.at_ms,
                wait_p50_ms: s.counts.wait.quantile(0.5),
                wait_p99_ms: s.counts.wait.quantile(0.99),
                run_p50_ms: s.counts.run.quantile(0.5),
                run_p99_ms: s.counts.run.quantile(0.99),
                counts: s.counts,
            })
            .collect();
    let span = span_min * minute;
    let step = step_min * minute;
    if out.json {
        out.json(&Report {
            queue: a.queue,
            step_ms: step,
            names,
            steps,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1}"));
    let mut t = Table::new(&[
        "FROM",
        "COMPLETED",
        "FAILED",
        "RETRIED",
        "DEAD",
        "FAIL %",
        "WAIT P50 ms",
        "WAIT P99 ms",
        "RUN P50 ms",
        "RUN P99 ms",
    ]);
    for s in &steps {
        let at = chrono::DateTime::from_timestamp_millis(s.at_ms)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        t.row(vec![
            at,
            s.counts.completed.to_string(),
            s.counts.failed.to_string(),
            s.counts.retried.to_string(),
            s.counts.dead.to_string(),
            format!("{:.1}", s.counts.failure_rate() * 100.0),
            ms(s.wait_p50_ms),
            ms(s.wait_p99_ms),
            ms(s.run_p50_ms),
            ms(s.run_p99_ms),
        ]);
    }
    out.line(&t.render(&out))?;
    if names.is_empty() {
        out.line(&format!("no settled jobs in the last {}", span_text(span)))?;
    } else {
        // The empty name is what fetch dead-lettered unread (garbage, over the cap).
        let list: Vec<String> = names
            .keys()
            .map(|n| match n.as_str() {
                "" => "(unreadable)".to_string(),
                n => printable(n).into_owned(),
            })
            .collect();
        out.line(&format!(
            "job names: {} (times are UTC; --name to pick one)",
            list.join(", ")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn span_text(ms: i64) -> String {
    let m = ms / 60_000;
    if m % 60 == 0 {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}
