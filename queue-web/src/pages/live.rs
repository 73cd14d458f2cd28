//! `/live`: server-sent events with every queue's counts, every two seconds; the pages' script
//! writes them into the cells marked `data-live="<queue>|<state>"`.
//!
//! One reader for all streams: the first stream starts a task that reads the counts and
//! publishes them on a watch channel; each stream sends what it publishes; the task ends when
//! the last stream has gone. Ten open tabs cost Redis what one does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::overview::STATES;
use super::App;

/// How often the counts are read.
const EVERY: Duration = Duration::from_secs(2);

/// What the reader publishes: the counts as JSON, or why Redis did not answer.
type Counts = Option<Result<Arc<str>, Arc<str>>>;

/// The shared reader's channel; a new one when no reader runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hub(Arc<Mutex<Option<watch::Sender<Counts>>>>);

impl Hub {
    /// A receiver of the counts, starting the reader if none runs.
    fn subscribe(&self, app: &App) -> watch::Receiver<Counts> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A sender in the slot is a reader still running (it empties the slot as it ends).
        if let Some(tx) = slot.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        *slot = Some(tx.clone());
        tokio::spawn(read_counts(app.clone(), tx));
        rx
    }
}

/// Reads the counts every [`EVERY`] while anyone listens.
async fn read_counts(app: App, tx: watch::Sender<Counts>) {
    let mut ticks = tokio::time::interval(EVERY);
    loop {
        ticks.tick().await;
        if tx.receiver_count() == 0 {
            // Under the hub's lock, so a stream arriving now either sees this sender gone or
            // subscribes to it before the check.
            let mut slot = app.live.0.lock().unwrap_or_else(|p| p.into_inner());
            if tx.receiver_count() == 0 {
                *slot = None;
                return;
            }
        }
        let counts = match counts(&app).await {
            Ok(c) => Ok(Arc::from(c)),
            Err(e) => Err(Arc::from(e.to_string())),
        };
        tx.send_replace(Some(counts));
    }
}

pub(super) async fn stream(
    State(app): State<App>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut rx = app.live.subscribe(&app);
    // Counts read before this stream subscribed are sent at once.
    if rx.borrow().is_some() {
        rx.mark_changed();
    }
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            let next = rx.borrow_and_update().clone();
            if let Some(counts) = next {
                let event = match counts {
                    Ok(c) => Event::default().event("counts").data(&*c),
                    // Redis away: the page says so, and the next read tries again.
                    Err(e) => Event::default().event("down").data(&*e),
                };
                return Some((Ok(event), rx));
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// `{"<queue>|<state>": n, ...}` as JSON (a queue that cannot be read is left out).
async fn counts(app: &App) -> queue_core::Result<String> {
    let queues = app.admin.queues().await?;
    let stats = futures_util::future::join_all(queues.iter().map(|q| app.admin.stats(q))).await;
    let mut out = BTreeMap::new();
    for s in stats.iter().flatten() {
        for state in STATES {
            out.insert(format!("{}|{}", s.queue, state.name()), s.count(state));
        }
    }
    Ok(serde_json::to_string(&out).unwrap_or_default())
}
