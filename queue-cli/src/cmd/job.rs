//! `queue job show|retry|delete <id>...` and `queue job retry-all|delete-all <queue>`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use queue::admin::Admin;
use queue::admin::JobView;
use queue::admin::State;
use serde::Serialize;

use super::jobs::{page, Row};
use crate::output::{confirm, printable, relative, Out};
use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The whole envelope with the arguments decoded to JSON, the error history and timestamps
    Show {
        id: String,
        /// Look only in this queue (default: every known queue)
        #[arg(long, short = 'q')]
        queue: Option<String>,
    },
    /// Run jobs again now: dead jobs get a fresh set of attempts; delayed and retrying jobs
    /// run at once
    Retry {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long, short = 'q')]
        queue: Option<String>,
    },
    /// Delete jobs (not running ones)
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long, short = 'q')]
        queue: Option<String>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Retry every job of a queue in a state (default dead)
    RetryAll(Bulk),
    /// Delete every job of a queue in a state (default dead)
    DeleteAll(Bulk),
}

#[derive(Debug, clap::Args)]
pub struct Bulk {
    queue: String,
    #[arg(long, default_value = "dead")]
    state: String,
    /// Only jobs with this name
    #[arg(long)]
    name: Option<String>,
    /// Say what would happen, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    row: Row,
    args: Option<serde_json::Value>,
    args_hex: Option<String>,
    result: Option<serde_json::Value>,
    /// The per-attempt timeout the envelope carries; absent: the handler's `#[job]` default
    /// applies (30 s when it declares none).
    timeout_ms: Option<u64>,
    unique_key: Option<String>,
    errors: Vec<queue::Failure>,
}

pub async fn run(g: &Global, out: Out, cmd: Command) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    match cmd {
        Command::Show { id, queue } => show(&admin, out, &id, queue.as_deref()).await,
        Command::Retry { ids, queue } => {
            let views = find_all(&admin, &ids, queue.as_deref()).await?;
            let n = admin.retry(&views).await?;
            report(&out, "retried", n, views.len())
        }
        Command::Delete { ids, queue, yes } => {
            let views = find_all(&admin, &ids, queue.as_deref()).await?;
            confirm(&format!("delete {} job(s)", views.len()), yes)?;
            let n = admin.delete(&views).await?;
            report(&out, "deleted", n, views.len())
        }
        Command::RetryAll(b) => bulk(&admin, out, b, true).await,
        Command::DeleteAll(b) => bulk(&admin, out, b, false).await,
    }
}

async fn find_all(
    admin: &Admin,
    ids: &[String],
    queue: Option<&str>,
) -> anyhow::Result<Vec<JobView>> {
    if let Some(q) = queue {
        admin.require_queue(q).await?;
    }
    let mut views = Vec::new();
    for id in ids {
        let v = admin
            .find(id, queue)
            .await?
            .ok_or_else(|| anyhow!(queue::Error::NotFound(format!("job {id}"))))?;
        views.push(v);
    }
    Ok(views)
}

fn report(out: &Out, what: &str, n: u64, asked: usize) -> anyhow::Result<ExitCode> {
    if out.json {
        out.json(&serde_json::json!({ "result": what, "count": n, "requested": asked }))?;
    } else {
        out.line(&format!("{what} {n} of {asked} job(s)"))?;
        if n < asked as u64 {
            out.line("the others changed state meanwhile; look again with `queue job show`")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(admin: &Admin, out: Out, id: &str, queue: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(q) = queue {
        admin.require_queue(q).await?;
    }
    let v = admin
        .find(id, queue)
        .await?
        .ok_or_else(|| anyhow!(queue::Error::NotFound(format!("job {id}"))))?;
    let job = v.job.as_ref().ok();
    let (args, args_hex) = match job {
        Some(j) => match queue::wire::decode_value::<serde_json::Value>(&j.args, "arguments") {
            Ok(a) => (Some(a), None),
            Err(_) => (
                None,
                Some(j.args.iter().map(|b| format!("{b:02x}")).collect()),
            ),
        },
        None => (None, None),
    };
    let result = v
        .outcome
        .as_ref()
        .and_then(|o| o.result.as_deref())
        .and_then(|r| queue::wire::decode_value::<serde_json::Value>(r, "result").ok());
    let shown = Shown {
        row: Row::from_view(&v),
        args,
        args_hex,
        result,
        timeout_ms: job.and_then(|j| j.timeout_ms),
        unique_key: job.and_then(|j| j.unique_key.clone()),
        errors: job.map(|j| j.errors.clone()).unwrap_or_default(),
    };
    if out.json {
        out.json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let r = &shown.row;
    let mut lines = vec![
        format!("{} {}", out.bold("job"), r.id),
        format!("  queue      {}", printable(&r.queue)),
        format!("  state      {}", r.state),
        format!(
            "  name       {}",
            r.name.as_deref().map_or("<undecodable>".into(), printable)
        ),
    ];
    if let Some(e) = &r.decode_error {
        lines.push(format!("  decode     {}", out.red(&printable(e))));
    }
    if let Some(p) = r.priority {
        lines.push(format!("  priority   {p}"));
    }
    if let (Some(a), Some(m)) = (r.attempt, r.max_attempts) {
        let note = if job.is_some_and(|j| j.max_attempts.is_none()) {
            " (unless its handler's #[job] says otherwise)"
        } else {
            ""
        };
        lines.push(format!("  attempts   {a} of {m} used{note}"));
    }
    if let Some(c) = r.created_ms {
        lines.push(format!("  created    {} ({})", iso(c), relative(c, now)));
    }
    if let Some(at) = r.at_ms {
        let label = v.state.at_label();
        lines.push(format!("  {label:<10} {} ({})", iso(at), relative(at, now)));
    }
    match shown.timeout_ms {
        Some(t) => lines.push(format!("  timeout    {t} ms")),
        None if job.is_some() => {
            lines.push("  timeout    the handler's default (30 s unless its #[job] says)".into())
        }
        None => {}
    }
    if let Some(u) = &shown.unique_key {
        lines.push(format!("  unique key {}", printable(u)));
    }
    match (&shown.args, &shown.args_hex) {
        (Some(a), _) => lines.push(format!(
            "  args       {}",
            serde_json::to_string_pretty(a)?.replace('\n', "\n             ")
        )),
        (None, Some(h)) => lines.push(format!("  args (hex) {h}")),
        _ => {}
    }
    if let Some(res) = &shown.result {
        lines.push(format!("  result     {}", serde_json::to_string(res)?));
    }
    if let Some(o) = &v.outcome {
        if let Some(e) = &o.error {
            lines.push(format!("  reason     {}", out.red(&printable(e))));
        }
    }
    if !shown.errors.is_empty() {
        lines.push("  errors".into());
        for f in &shown.errors {
            lines.push(format!(
                "    #{} {} {}: {}",
                f.attempt,
                iso(f.at_ms),
                printable(&f.kind),
                out.red(&printable(&f.message))
            ));
        }
    }
    out.line(&lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

async fn bulk(admin: &Admin, out: Out, b: Bulk, retry: bool) -> anyhow::Result<ExitCode> {
    let state = State::parse(&b.state)?;
    admin.require_queue(&b.queue).await?;
    let (verb, done_verb) = if retry {
        ("retry", "retried")
    } else {
        ("delete", "deleted")
    };
    if state == State::Active {
        bail!("running (active) jobs cannot be {done_verb}: they finish, or are recovered when their lease expires");
    }
    if retry
        && !matches!(
            state,
            State::Dead | State::Scheduled | State::Retrying | State::Recovered
        )
    {
        bail!("only dead, scheduled, retrying and recovered jobs can be retried");
    }
    let stats = admin.stats(&b.queue).await?;
    let total = stats.count(state);
    let scope = match &b.name {
        Some(n) => format!("{} {} jobs named {n:?}", state.name(), printable(&b.queue)),
        None => format!("{total} {} jobs of {}", state.name(), printable(&b.queue)),
    };
    if b.dry_run {
        let n = match &b.name {
            Some(n) => page(admin, &b.queue, state, Some(n), 0, usize::MAX)
                .await?
                .0
                .len() as u64,
            None => total,
        };
        if out.json {
            out.json(&serde_json::json!({ "dry_run": true, "action": verb, "queue": b.queue, "state": state.name(), "count": n }))?;
        } else {
            out.line(&format!(
                "would {verb} {n} {} job(s) of {} (dry run: nothing changed)",
                state.name(),
                printable(&b.queue)
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !retry {
        confirm(&format!("delete {scope}"), b.yes)?;
    }
    let bar = indicatif::ProgressBar::new(total);
    if !std::io::stderr().is_terminal() || out.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let query = match &b.name {
        Some(n) => queue::admin::Query::all().name(n.clone()),
        None => queue::admin::Query::all(),
    };
    let bulk = if retry {
        queue::admin::Bulk::Retry
    } else {
        queue::admin::Bulk::Delete
    };
    let done = admin
        .apply_all(&b.queue, state, &query, bulk, u64::MAX, |n| bar.inc(n))
        .await?
        .changed;
    bar.finish_and_clear();
    if out.json {
        out.json(&serde_json::json!({ "action": verb, "queue": b.queue, "state": state.name(), "count": done }))?;
    } else {
        out.line(&format!(
            "{done_verb} {done} {} job(s) of {}",
            state.name(),
            printable(&b.queue)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
