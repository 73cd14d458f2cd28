//! `/cron`: the cron schedules, their last and next runs, and pause, resume and trigger.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::Extension;

use super::{App, OrPage, PageResult};
use crate::html::{self, esc, Ctx};

pub(super) async fn page(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let schedules = app.cron.list().await.or_page(&ctx)?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut body = String::from("<h1>Cron schedules</h1>");
    let flash = match q.get("done").map(String::as_str) {
        Some("paused") => Some("Paused: its ticks are skipped until it is resumed."),
        Some("resumed") => Some("Resumed."),
        Some("triggered") => Some("Triggered: its job was enqueued now."),
        _ => None,
    };
    if let Some(f) = flash {
        let _ = write!(body, r#"<p class="flash">{f}</p>"#);
    }
    body.push_str(r#"<section class="card"><div class="scroll"><table><thead><tr><th>schedule</th><th>cron</th><th>zone</th><th>queue</th><th>job</th><th>last run</th><th>next run</th><th></th></tr></thead><tbody>"#);
    if schedules.is_empty() {
        body.push_str(r#"<tr><td colspan="8" class="empty">No schedule: workers register theirs when they start.</td></tr>"#);
    }
    for s in &schedules {
        let path = format!("/cron/{}", html::enc(&s.def.name));
        let mut actions = if s.paused {
            ctx.button(&format!("{path}/resume"), "Resume", "primary", &[])
        } else {
            ctx.button(&format!("{path}/pause"), "Pause", "", &[])
        };
        actions.push_str(&ctx.button(&format!("{path}/trigger"), "Run now", "", &[]));
        let paused = if s.paused {
            r#" <span class="badge warn">paused</span>"#
        } else {
            ""
        };
        let _ = write!(
            body,
            r#"<tr><td>{}{paused}</td><td class="mono">{}</td><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class="actions">{actions}</td></tr>"#,
            esc(&s.def.name),
            esc(&s.def.cron),
            esc(&s.def.tz),
            ctx.href(&format!("/queues/{}", html::enc(&s.def.queue))),
            esc(&s.def.queue),
            esc(&s.def.job),
            html::when(s.last_ms, now),
            if s.paused {
                "-".into()
            } else {
                html::when(s.next_ms, now)
            },
        );
    }
    body.push_str("</tbody></table></div></section>");
    Ok(Html(html::page(&ctx, "Cron", "Cron", &body)).into_response())
}
