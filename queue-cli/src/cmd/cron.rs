//! `queue cron ls|pause|resume|trigger`.

use std::process::ExitCode;

use queue::cron::Cron;

use crate::output::{printable, relative, Out, Table};
use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Schedules with their expression, zone, queue, last and next run
    Ls,
    /// Skip a schedule's ticks until resumed
    Pause { name: String },
    /// Fire a paused schedule's ticks again
    Resume { name: String },
    /// Enqueue a schedule's job now, outside its ticks
    Trigger { name: String },
}

pub async fn run(g: &Global, out: Out, cmd: Command) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    let cron = Cron::new(admin.client().clone());
    match cmd {
        Command::Ls => {
            let list = cron.list().await?;
            if out.json {
                out.json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let now = chrono::Utc::now().timestamp_millis();
            let mut t = Table::new(&[
                "SCHEDULE", "CRON", "ZONE", "QUEUE", "JOB", "STATE", "LAST RUN", "NEXT RUN",
                "MISFIRE",
            ]);
            for s in &list {
                t.row(vec![
                    printable(&s.def.name).into_owned(),
                    printable(&s.def.cron).into_owned(),
                    printable(&s.def.tz).into_owned(),
                    printable(&s.def.queue).into_owned(),
                    printable(&s.def.job).into_owned(),
                    if s.paused {
                        out.yellow("paused")
                    } else {
                        out.green("active")
                    },
                    s.last_ms
                        .map(|l| relative(l, now))
                        .unwrap_or_else(|| "never".into()),
                    s.next_ms
                        .map(|n| relative(n, now))
                        .unwrap_or_else(|| "-".into()),
                    match s.def.misfire {
                        queue::cron::Misfire::Skip => "skip".into(),
                        queue::cron::Misfire::FireOnce => "fire once".into(),
                        queue::cron::Misfire::CatchUp(n) => format!("catch up {n}"),
                    },
                ]);
            }
            if t.is_empty() {
                out.line(&out.dim("no schedules: declare #[job(cron = \"...\")] or WorkerBuilder::schedule, then start a worker"))?;
            } else {
                out.line(&t.render(&out))?;
            }
        }
        Command::Pause { name } => {
            cron.set_paused(&name, true).await?;
            say(&out, &name, "paused")?;
        }
        Command::Resume { name } => {
            cron.set_paused(&name, false).await?;
            say(&out, &name, "resumed")?;
        }
        Command::Trigger { name } => {
            let e = cron.trigger(&name).await?;
            if out.json {
                out.json(&serde_json::json!({ "schedule": name, "id": e.id.to_string(), "queue": e.queue, "duplicate": e.duplicate }))?;
            } else if e.duplicate {
                out.line(&format!(
                    "triggered {}: nothing enqueued, job {} in {} holds its unique key",
                    printable(&name),
                    e.id,
                    printable(&e.queue)
                ))?;
            } else {
                out.line(&format!(
                    "triggered {}: job {} in {}",
                    printable(&name),
                    e.id,
                    printable(&e.queue)
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn say(out: &Out, name: &str, what: &str) -> anyhow::Result<()> {
    if out.json {
        out.json(&serde_json::json!({ "schedule": name, "result": what }))
    } else {
        out.line(&format!("schedule {} {what}", printable(name)))
    }
}
