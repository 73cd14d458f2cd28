//! `queue jobs <queue> --state <state> [--limit --page --name]`.

use std::process::ExitCode;

use queue::admin::Admin;
use queue::admin::JobView;
use queue::admin::State;
use serde::Serialize;

use crate::output::{printable, relative, Out, Table};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue
    queue: String,
    /// pending, scheduled, retrying, recovered, active, dead or completed
    #[arg(long, default_value = "pending")]
    state: String,
    /// Rows per page
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Page number, from 1
    #[arg(long, default_value_t = 1)]
    page: usize,
    /// Only jobs with this name (filters while paging; scans at most 10,000 jobs)
    #[arg(long)]
    name: Option<String>,
}

/// A job as printed by `--json`: a stable shape for scripts.
#[derive(Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub queue: String,
    pub state: &'static str,
    pub name: Option<String>,
    pub priority: Option<u8>,
    pub attempt: Option<u32>,
    pub max_attempts: Option<u32>,
    pub created_ms: Option<i64>,
    pub at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub decode_error: Option<String>,
}

impl Row {
    pub fn from_view(v: &JobView) -> Row {
        let j = v.job.as_ref().ok();
        Row {
            id: v.id.to_string(),
            queue: v.queue.clone(),
            state: v.state.name(),
            name: j.map(|j| j.name.clone()),
            priority: j.map(|j| j.priority),
            // Attempts used: the failed ones, and the one running or the one that succeeded.
            attempt: j.map(|j| {
                if v.state == State::Active || v.engine_state() == queue::JobState::Completed {
                    j.attempt()
                } else {
                    j.failed
                }
            }),
            max_attempts: j.map(|j| j.max_attempts()),
            created_ms: j.map(|j| j.created_ms),
            at_ms: v.at_ms,
            last_error: j
                .and_then(|j| j.last_error().map(|f| f.summary()))
                .or_else(|| v.outcome.as_ref().and_then(|o| o.error.clone())),
            decode_error: v.job.as_ref().err().cloned(),
        }
    }
}

/// How many entries of a state a search by name reads at most.
pub const SCAN_LIMIT: usize = 10_000;

/// Pages through a state, keeping only jobs named `name` when given. With a name, reads at
/// most [`SCAN_LIMIT`] entries; the flag says whether it stopped there with entries unread.
pub async fn page(
    admin: &Admin,
    queue: &str,
    state: State,
    name: Option<&str>,
    skip: usize,
    limit: usize,
) -> anyhow::Result<(Vec<JobView>, bool)> {
    let Some(name) = name else {
        return Ok((admin.list(queue, state, skip, limit).await?, false));
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut offset = 0;
    let mut stopped = false;
    while out.len() < limit {
        if offset >= SCAN_LIMIT {
            stopped = !admin.list(queue, state, offset, 1).await?.is_empty();
            break;
        }
        let chunk = admin.list(queue, state, offset, 500).await?;
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len();
        for v in chunk {
            if v.job.as_ref().is_ok_and(|j| j.name == name) {
                if skipped < skip {
                    skipped += 1;
                } else if out.len() < limit {
                    out.push(v);
                }
            }
        }
    }
    Ok((out, stopped))
}

pub async fn run(g: &Global, out: Out, args: Args) -> anyhow::Result<ExitCode> {
    let state = State::parse(&args.state)?;
    if args.page == 0 || args.limit == 0 {
        anyhow::bail!("--page and --limit start at 1");
    }
    let admin = g.connect().await?;
    admin.require_queue(&args.queue).await?;
    let (views, stopped) = page(
        &admin,
        &args.queue,
        state,
        args.name.as_deref(),
        (args.page - 1) * args.limit,
        args.limit,
    )
    .await?;
    // Said on stderr, so that JSON output stays one document.
    if stopped {
        eprintln!(
            "{}",
            out.yellow(&format!(
                "only the first {SCAN_LIMIT} {} jobs were searched by name; more are not shown (`queue web` searches the rest a page at a time)",
                state.name()
            ))
        );
    }
    let rows: Vec<Row> = views.iter().map(Row::from_view).collect();
    if out.json {
        out.json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let when_header = match state {
        State::Pending | State::Recovered => "ENQUEUED",
        State::Scheduled | State::Retrying => "RUNS",
        State::Active => "LEASE ENDS",
        State::Dead => "DIED",
        _ => "FINISHED",
    };
    let mut t = Table::new(&["ID", "NAME", "PRIO", "ATTEMPT", when_header, "LAST ERROR"]);
    for r in &rows {
        let when = match state {
            State::Pending | State::Recovered => r.created_ms,
            _ => r.at_ms,
        };
        let err = r
            .last_error
            .clone()
            .or_else(|| r.decode_error.clone())
            .unwrap_or_default();
        t.row(vec![
            r.id.clone(),
            r.name
                .as_deref()
                .map(|n| printable(n).into_owned())
                .unwrap_or_else(|| out.red("<undecodable>")),
            r.priority.map(|p| p.to_string()).unwrap_or_default(),
            match (r.attempt, r.max_attempts) {
                (Some(a), Some(m)) => format!("{a}/{m}"),
                _ => String::new(),
            },
            when.map(|w| relative(w, now)).unwrap_or_default(),
            truncate(&err, 60),
        ]);
    }
    if t.is_empty() {
        let among = if stopped {
            format!(" among the first {SCAN_LIMIT}")
        } else {
            String::new()
        };
        out.line(&out.dim(&format!(
            "no {} jobs{among} in {} (page {})",
            state.name(),
            printable(&args.queue),
            args.page
        )))?;
    } else {
        out.line(&t.render(&out))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An error message in one table cell: a multi-line message reads as one line, and other
/// control characters are escaped.
fn truncate(s: &str, n: usize) -> String {
    let s = printable(&s.replace('\n', " ")).into_owned();
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
