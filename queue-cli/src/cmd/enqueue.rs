//! `queue enqueue <job-name> --queue <q> --args '<json>'|@<file>|- [...]`.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use queue::NewJob;

use crate::output::{parse_duration, printable, Out};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job name, as the handler declares it (`#[job(name = "...")]`)
    name: String,
    #[arg(long, short = 'q', default_value = "default")]
    queue: String,
    /// The arguments: JSON, `@FILE` to read the JSON from a file, or `-` to read it from stdin
    ///
    /// They are encoded to the same MessagePack a Rust producer writes. JSON never starts with
    /// `@`, so `@FILE` cannot be mistaken for arguments; a file or stdin carries arguments too
    /// large for a command line (the system refuses more than about 128 KiB there).
    #[arg(long, default_value = "null", value_name = "JSON|@FILE|-")]
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
    /// The W3C trace context to carry (00-<32 hex>-<16 hex>-<2 hex>)
    #[arg(long)]
    traceparent: Option<String>,
}

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    // Everything is validated before connecting.
    let value = read_args(&a.args)?;
    let bytes = queue::wire::encode_value(&value, "job arguments")?;
    let mut job = NewJob::raw(a.name.clone(), bytes).queue(a.queue.clone());
    if let Some(d) = a.delay {
        job = job.delay(d);
    }
    if let Some(at) = &a.at {
        let t = chrono::DateTime::parse_from_rfc3339(at)
            .context("--at takes an RFC 3339 time such as 2026-11-26T18:00:00Z")?
            .with_timezone(&chrono::Utc);
        // A time already gone is a mistake (a wrong date or zone), not "now": say so. A second
        // of slack covers a time typed as "now" and clocks a little apart.
        let now = chrono::Utc::now();
        if t < now - chrono::Duration::seconds(1) {
            anyhow::bail!(
                "--at {at} is in the past (it is {} now); leave --at out to run the job now",
                now.format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
        job = job.run_at(t);
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
    if let Some(tp) = a.traceparent {
        if !queue::wire::valid_traceparent(&tp) {
            bail!("--traceparent {tp:?} is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)");
        }
        job = job.traceparent(tp);
    }
    let admin = g.connect().await?;
    let e = admin.client().enqueue_job(job).await?;
    if out.json {
        out.json(&serde_json::json!({ "id": e.id.to_string(), "queue": e.queue, "duplicate": e.duplicate }))?;
    } else if e.duplicate {
        out.line(&format!(
            "duplicate: job {} already holds this unique key in {}; nothing enqueued",
            e.id,
            printable(&e.queue)
        ))?;
    } else {
        out.line(&format!(
            "enqueued {} {} in {}",
            printable(&a.name),
            e.id,
            printable(&e.queue)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The most `--args @FILE` or `--args -` reads. Encoded arguments must fit the client's payload
/// cap, and JSON is rarely more than a few times the size of its MessagePack, so input 64 times
/// the cap cannot be a job's arguments: the bound keeps `--args @/dev/zero` from eating memory.
const MAX_ARGS_INPUT: u64 = 64 * queue::wire::DEFAULT_MAX_PAYLOAD as u64;

/// The JSON of `--args`: the value itself, the contents of a file (`@FILE`) or stdin (`-`).
/// Errors name the file (or stdin) and say what is wrong with it.
fn read_args(raw: &str) -> anyhow::Result<serde_json::Value> {
    let (what, bytes) = if raw == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading the job arguments (JSON) from stdin; end them with Ctrl-D");
        }
        let what = "--args - (stdin)".to_string();
        let bytes = read_bounded(stdin.lock(), &what)?;
        (what, bytes)
    } else if let Some(path) = raw.strip_prefix('@') {
        if path.is_empty() {
            bail!("--args @ needs a file name after the @, e.g. --args @args.json");
        }
        // Debug quoting: a file name is printed with its control characters escaped.
        let what = format!("--args file {:?}", Path::new(path));
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {what}"))?;
        let bytes = read_bounded(file, &what)?;
        (what, bytes)
    } else {
        return serde_json::from_str(raw).context("--args is not valid JSON");
    };
    // Editors on Windows start UTF-8 files with a byte-order mark, which JSON does not allow.
    let json = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    serde_json::from_slice(json).with_context(|| format!("{what} is not valid JSON"))
}

fn read_bounded(input: impl Read, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input
        .take(MAX_ARGS_INPUT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > MAX_ARGS_INPUT {
        bail!(
            "{what} holds more than {} MiB, far over what a job's arguments may encode to ({} KiB)",
            MAX_ARGS_INPUT >> 20,
            queue::wire::DEFAULT_MAX_PAYLOAD >> 10
        );
    }
    Ok(bytes)
}
