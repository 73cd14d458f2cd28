//! `/live`: server-sent events with every queue's counts, every two seconds; the pages' script
//! writes them into the cells marked `data-live="<queue>|<state>"`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::overview::{count, STATES};
use super::App;

/// How often the counts are sent.
const EVERY: Duration = Duration::from_secs(2);

pub(super) async fn stream(
    State(app): State<App>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio::time::interval(EVERY);
    let events = futures_util::stream::unfold((app, ticks), |(app, mut ticks)| async move {
        ticks.tick().await;
        let event = match counts(&app).await {
            Ok(c) => Event::default().event("counts").data(c),
            // Redis away: the page says so, and the next tick tries again.
            Err(e) => Event::default().event("down").data(e.to_string()),
        };
        Some((Ok(event), (app, ticks)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// `{"<queue>|<state>": n, ...}` as JSON.
async fn counts(app: &App) -> queue_core::Result<String> {
    let queues = app.admin.queues().await?;
    let stats =
        futures_util::future::try_join_all(queues.iter().map(|q| app.admin.stats(q))).await?;
    let mut out = BTreeMap::new();
    for s in &stats {
        for state in STATES {
            out.insert(format!("{}|{}", s.queue, state.name()), count(s, state));
        }
    }
    Ok(serde_json::to_string(&out).unwrap_or_default())
}
