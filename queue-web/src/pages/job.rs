//! `/queues/{queue}/jobs/{id}`: a job's envelope, decoded arguments and result, error history
//! and lifecycle events, with its retry and delete buttons.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::Extension;
use queue_core::admin::State as JobState;
use queue_core::events::Lifecycle;

use super::queue::retryable;
use super::{App, OrPage, PageResult};
use crate::html::{self, esc, Ctx};

/// How many of the queue's latest lifecycle events the page looks through for the job's.
const EVENTS_READ: usize = 1_000;

pub(super) async fn page(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path((queue, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    app.admin.require_queue(&queue).await.or_page(&ctx)?;
    // Bounded: the sets that can only be searched whole are searched when the link says the
    // job is there (the job lists' links do).
    let state = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(JobState::parse(s).or_page(&ctx)?),
    };
    let Some(v) = app
        .admin
        .find_quick(&id, &queue, state)
        .await
        .or_page(&ctx)?
    else {
        return Ok(not_found(&ctx, &queue, &id, state));
    };
    let events = Lifecycle::new(app.admin.client().clone())
        .tail(&queue, EVENTS_READ)
        .await
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp_millis();
    let qpath = format!("/queues/{}", html::enc(&queue));
    let jpath = format!("{qpath}/jobs/{}", html::enc(v.id.as_str()));
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="crumbs"><a href="{}">Queues</a> / <a href="{}">{}</a> /</p><div class="row"><h1 class="mono">{}</h1><div class="actions">"#,
        ctx.href("/"),
        ctx.href(&format!("{qpath}?state={}", v.state.name())),
        esc(&queue),
        esc(v.id.as_str()),
    );
    let here = [("state", v.state.name())];
    if retryable(v.state) {
        body.push_str(&ctx.button(&format!("{jpath}/retry"), "Retry now", "primary", &here));
    }
    if v.state != JobState::Active {
        body.push_str(&ctx.button(&format!("{jpath}/delete"), "Delete", "danger", &here));
    }
    body.push_str("</div></div>");
    if let Some(done) = q.get("done").filter(|d| *d == "retried") {
        let _ = write!(
            body,
            r#"<p class="flash">{}</p>"#,
            esc(&format!("{done}: it runs again now."))
        );
    }
    let mut rows: Vec<(&str, String)> = vec![(
        "state",
        format!(
            r#"<span class="badge state-{0}">{0}</span>"#,
            v.state.name()
        ),
    )];
    let job = v.job.as_ref().ok();
    match &v.job {
        Ok(j) => {
            rows.push(("name", esc(&j.name)));
            rows.push(("priority", j.priority.to_string()));
            rows.push((
                "attempts",
                format!("{} failed of {} allowed", j.failed, j.max_attempts()),
            ));
            rows.push(("created", html::when(Some(j.created_ms), now)));
            if let Some(t) = j.timeout_ms {
                rows.push(("timeout", html::ms(Some(t as f64))));
            }
            if let Some(u) = &j.unique_key {
                rows.push(("unique key", esc(u)));
            }
            if let Some(t) = &j.traceparent {
                rows.push((
                    "traceparent",
                    format!(r#"<span class="mono">{}</span>"#, esc(t)),
                ));
            }
        }
        Err(e) => rows.push((
            "envelope",
            format!(
                r#"<span class="badge danger">undecodable</span> {}"#,
                esc(e)
            ),
        )),
    }
    if let Some(at) = v.at_ms {
        rows.push((v.state.at_label(), html::when(Some(at), now)));
    }
    if let Some(e) = v.outcome.as_ref().and_then(|o| o.error.as_ref()) {
        rows.push((
            "reason",
            format!(r#"<span class="error">{}</span>"#, esc(e)),
        ));
    }
    body.push_str(r#"<section class="card"><dl class="fields">"#);
    for (k, val) in rows {
        let _ = write!(body, "<dt>{k}</dt><dd>{val}</dd>");
    }
    body.push_str("</dl></section>");
    if let Some(j) = job {
        let args = match queue_core::wire::decode_value::<serde_json::Value>(&j.args, "arguments") {
            Ok(a) => serde_json::to_string_pretty(&a).unwrap_or_default(),
            Err(e) => format!("{e}\n(hex) {}", hex(&j.args)),
        };
        let _ = write!(
            body,
            r#"<section class="card"><h2>Arguments</h2><pre class="json">{}</pre></section>"#,
            esc(&args)
        );
    }
    if let Some(r) = v.outcome.as_ref().and_then(|o| o.result.as_deref()) {
        let shown = match queue_core::wire::decode_value::<serde_json::Value>(r, "result") {
            Ok(a) => serde_json::to_string_pretty(&a).unwrap_or_default(),
            Err(_) => format!("(hex) {}", hex(r)),
        };
        let _ = write!(
            body,
            r#"<section class="card"><h2>Result</h2><pre class="json">{}</pre></section>"#,
            esc(&shown)
        );
    }
    if let Some(j) = job.filter(|j| !j.errors.is_empty()) {
        body.push_str(r#"<section class="card"><h2>Errors</h2><div class="scroll"><table><thead><tr><th class="n">attempt</th><th>when</th><th>kind</th><th>message</th></tr></thead><tbody>"#);
        for f in &j.errors {
            let _ = write!(
                body,
                r#"<tr><td class="n">{}</td><td>{}</td><td>{}</td><td class="error">{}</td></tr>"#,
                f.attempt,
                html::when(Some(f.at_ms), now),
                esc(&f.kind),
                esc(&f.message)
            );
        }
        body.push_str("</tbody></table></div></section>");
    }
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.ids.iter().any(|i| i == v.id.as_str()))
        .collect();
    body.push_str(r#"<section class="card"><h2>Lifecycle</h2>"#);
    if mine.is_empty() {
        let _ = write!(
            body,
            r#"<p class="empty">No event of this job among the queue's last {} (lifecycle events are off unless <code>queue events {} --enable</code> turned them on).</p>"#,
            html::num(EVENTS_READ as u64),
            esc(&shell_word(&queue))
        );
    } else {
        body.push_str(r#"<ol class="events">"#);
        for e in mine {
            let _ = write!(
                body,
                r#"<li><span class="badge state-{kind}">{kind}</span> {}{}</li>"#,
                html::when(Some(e.at), now),
                e.error
                    .as_ref()
                    .map(|x| format!(r#" <span class="error">{}</span>"#, esc(x)))
                    .unwrap_or_default(),
                kind = esc(&e.kind),
            );
        }
        body.push_str("</ol>");
    }
    body.push_str("</section>");
    Ok(Html(html::page(&ctx, v.id.as_str(), "", &body)).into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `/queues/{queue}/find?id=..`: the find-by-id form's answer, a redirect to the job's page.
pub(super) async fn find(
    Extension(ctx): Extension<Ctx>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let id = q.get("id").map_or("", |s| s.trim());
    let mut path = format!("/queues/{}/jobs/{}", html::enc(&queue), html::enc(id));
    if let Some(s) = q.get("state").filter(|s| !s.is_empty()) {
        path.push_str(&format!("?state={}", html::enc(s)));
    }
    axum::response::Redirect::to(&ctx.url(&path)).into_response()
}

/// A word as a shell reads it back: quoted unless it is plain.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Not in the states looked in: where else it could be, each a link that looks there.
fn not_found(
    ctx: &Ctx,
    queue: &str,
    id: &str,
    state: Option<JobState>,
) -> axum::response::Response {
    let jpath = format!("/queues/{}/jobs/{}", html::enc(queue), html::enc(id));
    let elsewhere: Vec<String> = [JobState::Scheduled, JobState::Retrying, JobState::Recovered]
        .into_iter()
        .filter(|s| Some(*s) != state)
        .map(|s| {
            format!(
                r#"<a href="{}?state={}">{}</a>"#,
                ctx.href(&jpath),
                s.name(),
                s.name()
            )
        })
        .collect();
    let body = format!(
        r#"<h1>Not found</h1><p class="message">No job {} among the pending, active, dead and completed jobs of {}{}. Finished jobs are kept as long as the queue's retention says. Look among the {} jobs (each reads that whole set).</p>"#,
        esc(id),
        esc(queue),
        state
            .map(|s| format!(" nor the {} ones", s.name()))
            .unwrap_or_default(),
        elsewhere.join(", ")
    );
    (
        StatusCode::NOT_FOUND,
        Html(html::page(ctx, "Not found", "", &body)),
    )
        .into_response()
}
