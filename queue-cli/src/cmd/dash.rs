//! `queue dash [--interval 1s]`: a live terminal dashboard (ratatui).
//!
//! Three parts, so that all but the terminal itself runs in tests:
//!
//! - `app.rs`: the fetched [`Snapshot`] and the selection ([`App`]); a key press changes the
//!   selection and may return an [`Action`] (pause, resume, retry, open a job, quit).
//! - `ui.rs`: `draw`, a pure function of the `App` (tests render it on `TestBackend`).
//! - this file: reading a snapshot from Redis, carrying out actions, and the event loop that
//!   ties them to the terminal.
//!
//! Reads and actions run as tokio tasks beside the loop, so a slow or unreachable Redis never
//! holds up the keyboard: the screen keeps the last figures and says why they are old.

mod app;
mod ui;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Once;
use std::time::Duration;

use anyhow::{bail, Context};
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use queue::admin::Admin;
use ratatui::layout::Rect;
use tokio::task::JoinSet;

use self::app::{Action, App, JobRef, Page, QueueRow, Snapshot, Status, Want, THROUGHPUT_MINUTES};
use crate::error::Secrets;
use crate::output::{printable, Out};
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How often to read Redis again (every queue's counts and history, and the job list)
    #[arg(long, default_value = "1s", value_parser = crate::output::parse_duration)]
    interval: Duration,
}

/// Each refresh reads every queue; more often than this is load on Redis for nothing a person
/// can read.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    if out.json {
        bail!("queue dash draws a screen and has no --json; use queue stats --watch --json");
    }
    // Raw mode and escape sequences into a file or a pipe would only garble it.
    if !std::io::stdout().is_terminal() {
        bail!("queue dash needs a terminal; use queue stats --watch");
    }
    if a.interval < MIN_INTERVAL {
        bail!("--interval is at least 100ms");
    }
    let admin = g.connect().await?;
    let secrets = Secrets::new(g.redis_url.as_deref());
    let (cols, rows) = crossterm::terminal::size().context("cannot read the terminal's size")?;
    let mut app = App::new(1);
    app.page_size = ui::page_size(Rect::new(0, 0, cols, rows), &app);
    // The first read happens before the screen is taken, so a server that refuses it (wrong
    // password, missing ACL rules) fails the command with the usual one-line error.
    app.apply(snapshot(&admin, &app.want()).await?);

    let _restore = Restore;
    install_panic_hook();
    crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
    crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::EnterAlternateScreen,
        crossterm::cursor::Hide
    )?;
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    event_loop(&mut terminal, &admin, app, a.interval, &secrets).await?;
    Ok(ExitCode::SUCCESS)
}

/// Restores the terminal when dropped: on return, on error, and while unwinding from a panic.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// Raw mode off, the alternate screen left, the cursor shown. Each step is harmless when the
/// terminal is not in that state, so it runs as often as it is reached.
fn restore() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Restores the terminal before the panic message is printed: printed on the alternate screen
/// in raw mode, it would vanish with the screen (or print as a staircase).
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// What a task beside the loop came back with.
#[derive(Debug)]
enum Done {
    Read(anyhow::Result<Box<Snapshot>>),
    Did(anyhow::Result<Effect>),
}

/// What an action did.
#[derive(Debug)]
enum Effect {
    /// A change, in words for the status line.
    Said(String),
    /// The job the detail pane opened on, as it is now (`None`: gone).
    Opened(JobRef, Option<Box<queue::admin::JobView>>),
    /// Nothing to report: the loop itself handles quitting and refreshing.
    Nothing,
}

async fn event_loop<B: ratatui::backend::Backend>(
    terminal: &mut ratatui::Terminal<B>,
    admin: &Admin,
    mut app: App,
    interval: Duration,
    secrets: &Secrets,
) -> anyhow::Result<()> {
    let mut events = EventStream::new();
    // The first snapshot is already on screen: the first tick is one interval away.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks: JoinSet<Done> = JoinSet::new();
    let mut last_want = app.want();
    // One read at a time; a read asked for meanwhile starts when it ends.
    let mut reading = false;
    let mut read_again = false;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let size = terminal.size()?;
        app.page_size = ui::page_size(Rect::new(0, 0, size.width, size.height), &app);
        terminal.draw(|f| ui::draw(f, &app))?;
        // A new selection (or a resize that changed the page) is read at once.
        if !reading && (read_again || app.want() != last_want) {
            last_want = app.want();
            let (admin, want) = (admin.clone(), last_want.clone());
            tasks.spawn(async move { Done::Read(snapshot(&admin, &want).await.map(Box::new)) });
            reading = true;
            read_again = false;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => match app.on_key(key) {
                    Some(Action::Quit) => return Ok(()),
                    Some(Action::Refresh) => read_again = true,
                    Some(action) => {
                        let admin = admin.clone();
                        tasks.spawn(async move { Done::Did(perform(&admin, action).await) });
                    }
                    None => {}
                },
                // A resize or focus change: the loop redraws.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                None => return Ok(()),
            },
            _ = tick.tick() => read_again = true,
            stopped = &mut stop => return stopped.context("cannot watch for signals"),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done.context("a dashboard task failed")? {
                    Done::Read(Ok(snap)) => {
                        reading = false;
                        app.apply(*snap);
                    }
                    Done::Read(Err(e)) => {
                        reading = false;
                        app.refresh_error = Some(describe(&e, secrets));
                    }
                    Done::Did(Ok(Effect::Opened(r, view))) => app.reopened(&r, view.map(|v| *v)),
                    Done::Did(Ok(Effect::Said(said))) => {
                        app.status = Some(Status::Info(said));
                        // Show what the action changed without waiting for the tick.
                        read_again = true;
                    }
                    Done::Did(Ok(Effect::Nothing)) => {}
                    Done::Did(Err(e)) => {
                        app.status = Some(Status::Error(describe(&e, secrets)));
                    }
                }
            }
        }
    }
}

/// Resolves when the process is asked to stop (SIGTERM, or SIGHUP when the terminal goes):
/// the loop returns and the terminal is restored, as on `q`, where the default action of
/// those signals would leave it in raw mode.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::future::pending().await
}

/// An error for the status line, without the Redis password: the chain of causes down to the
/// library's error, whose message already ends with its own source's (as `error.rs` reports
/// a failed command).
fn describe(e: &anyhow::Error, secrets: &Secrets) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(secrets.scrub(&cause.to_string()));
        if cause.downcast_ref::<queue::Error>().is_some() {
            break;
        }
    }
    parts.join(": ")
}

/// Reads what the dashboard shows: every queue's counts and the completions of each of its last
/// [`THROUGHPUT_MINUTES`] minutes, one page of the selected queue's jobs in the selected state,
/// and the open job. The queues are read concurrently; the cost is a few round trips a queue.
async fn snapshot(admin: &Admin, want: &Want) -> anyhow::Result<Snapshot> {
    let now = chrono::Utc::now().timestamp_millis();
    let from = (queue::admin::minute_of(now) - THROUGHPUT_MINUTES as i64 + 1) * 60_000;
    let names = admin.queues().await?;
    let queues = futures_util::future::try_join_all(names.iter().map(|q| async move {
        let stats = admin.stats(q).await?;
        let minutes = admin.history(q, from, now).await?;
        let completed_per_minute = minutes.iter().map(|m| m.total().completed).collect();
        anyhow::Ok(QueueRow {
            stats,
            completed_per_minute,
        })
    }))
    .await?;
    // The selected queue, or the first one when it is gone (or nothing is selected yet).
    let queue = want
        .queue
        .as_ref()
        .filter(|q| names.contains(q))
        .or(names.first());
    let (jobs_of, jobs) = match queue {
        Some(q) => {
            let jobs = admin.list(q, want.state, want.offset, want.limit).await?;
            let page = Page {
                queue: q.clone(),
                state: want.state,
                offset: want.offset,
                limit: want.limit,
            };
            (Some(page), jobs)
        }
        None => (None, Vec::new()),
    };
    let detail = match &want.open {
        Some(r) => admin.find(&r.id, Some(&r.queue)).await?,
        None => None,
    };
    Ok(Snapshot {
        queues,
        jobs_of,
        jobs,
        opened: want.open.clone(),
        detail,
        taken_ms: now,
    })
}

/// Carries out an action against Redis.
async fn perform(admin: &Admin, action: Action) -> anyhow::Result<Effect> {
    let said = match action {
        Action::Pause(q) => {
            admin.client().pause(&q).await?;
            format!(
                "paused {}: workers lease nothing from it until p resumes it",
                printable(&q)
            )
        }
        Action::Resume(q) => {
            admin.client().resume(&q).await?;
            format!("resumed {}", printable(&q))
        }
        Action::Retry(view) => {
            let moved = admin.retry(std::slice::from_ref(&*view)).await?;
            if moved == 0 {
                format!("job {} changed state meanwhile: nothing retried", view.id)
            } else {
                format!("retried job {}: it is pending now", view.id)
            }
        }
        // The pane shows the listed copy at once; this read brings what the list may not
        // carry (a completed job's result) and any move since the list was read.
        Action::Open(r) => {
            let now = admin.find(&r.id, Some(&r.queue)).await?;
            return Ok(Effect::Opened(r, now.map(Box::new)));
        }
        Action::Quit | Action::Refresh => return Ok(Effect::Nothing),
    };
    Ok(Effect::Said(said))
}
