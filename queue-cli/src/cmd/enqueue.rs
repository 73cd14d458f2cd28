//! `queue enqueue <job-name> --queue <q> --args '<json>' [...]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use queue::NewJob;

use crate::output::{parse_duration, Out};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job name, as the handler declares it (`#[job(name = "...")]`)
    name: String,
    #[arg(long, short = 'q', default_value = "default")]
    queue: String,
    /// The arguments as JSON; encoded to the same MessagePack a Rust producer writes
    #[arg(long, default_value = "null")]
    args: String,
    /// Run after this delay (e.g. 10m)
    #[arg(long, value_parser = parse_duration, conflicts_with = "at")]
    delay: Option<Duration>,
    /// Run at this time (RFC 3339, e.g. 2026-11-26T18:00:00Z)
    #[arg(long)]
    at: Option<String>,
    /// 0..=255, higher first
    #[arg(long)]
    priority: Option<u8>,
    /// Idempotency key (needs --unique-for)
    #[arg(long, requires = "unique_for")]
    unique_key: Option<String>,
    /// How long the idempotency key lives (e.g. 1h)
    #[arg(long, value_parser = parse_duration)]
    unique_for: Option<Duration>,
    /// Maximum attempts
    #[arg(long)]
    max_attempts: Option<u32>,
}

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    // Everything is validated before connecting.
    let value: serde_json::Value =
        serde_json::from_str(&a.args).context("--args is not valid JSON")?;
    let bytes = queue::wire::encode_value(&value, "job arguments")?;
    let mut job = NewJob::raw(a.name.clone(), bytes).queue(a.queue.clone());
    if let Some(d) = a.delay {
        job = job.delay(d);
    }
    if let Some(at) = &a.at {
        let t = chrono::DateTime::parse_from_rfc3339(at)
            .context("--at takes an RFC 3339 time such as 2026-11-26T18:00:00Z")?;
        job = job.run_at(t.with_timezone(&chrono::Utc));
    }
    if let Some(p) = a.priority {
        job = job.priority(p);
    }
    match (a.unique_key, a.unique_for) {
        (Some(k), Some(ttl)) => job = job.unique(k, ttl),
        (None, Some(ttl)) => job = job.unique_for_args(ttl),
        (Some(_), None) => bail!("--unique-key needs --unique-for"),
        (None, None) => {}
    }
    if let Some(m) = a.max_attempts {
        job = job.max_attempts(m);
    }
    let admin = g.connect().await?;
    let e = admin.client().enqueue_job(job).await?;
    if out.json {
        out.json(&serde_json::json!({ "id": e.id.to_string(), "queue": e.queue, "duplicate": e.duplicate }))?;
    } else if e.duplicate {
        out.line(&format!(
            "duplicate: job {} already holds this unique key in {}; nothing enqueued",
            e.id, e.queue
        ))?;
    } else {
        out.line(&format!("enqueued {} {} in {}", a.name, e.id, e.queue))?;
    }
    Ok(ExitCode::SUCCESS)
}
