//! `/workers`: live and dead worker processes, from their heartbeat records.

use std::fmt::Write;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::Extension;

use super::{App, OrPage, PageResult};
use crate::html::{self, esc, Ctx};

pub(super) async fn page(State(app): State<App>, Extension(ctx): Extension<Ctx>) -> PageResult {
    let workers = app.admin.workers().await.or_page(&ctx)?;
    let now = chrono::Utc::now().timestamp_millis();
    let alive = workers.iter().filter(|w| w.alive(now)).count();
    let mut body = format!(
        r#"<h1>Workers</h1><p>{} alive, {} dead (a worker is dead after three missed heartbeats; its record goes after an hour, and its jobs were recovered when their leases expired).</p><section class="card"><div class="scroll"><table><thead><tr><th>worker</th><th></th><th>host</th><th class="n">pid</th><th>queues (weight)</th><th class="n">concurrency</th><th class="n">in flight</th><th>started</th><th>last heartbeat</th></tr></thead><tbody>"#,
        alive,
        workers.len() - alive
    );
    if workers.is_empty() {
        body.push_str(r#"<tr><td colspan="9" class="empty">No worker has reported.</td></tr>"#);
    }
    for w in &workers {
        let badge = if w.alive(now) {
            r#"<span class="badge ok">alive</span>"#
        } else {
            r#"<span class="badge danger">dead</span>"#
        };
        let _ = write!(
            body,
            r#"<tr><td class="mono">{}</td><td>{badge}</td><td>{}</td><td class="n">{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&w.id),
            esc(&w.host),
            w.pid,
            esc(&w.queues),
            w.concurrency,
            w.in_flight,
            html::when(Some(w.started_ms), now),
            html::when(Some(w.last_beat_ms), now)
        );
    }
    body.push_str("</tbody></table></div></section>");
    Ok(Html(html::page(&ctx, "Workers", "Workers", &body)).into_response())
}
