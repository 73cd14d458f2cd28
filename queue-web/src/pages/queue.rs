//! `/queues/{queue}`: a queue's counts, chart and jobs by state, paged, filtered by name and
//! searched by argument content; and the confirmation page of its bulk actions.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::Extension;
use queue_core::admin::{JobView, Query as Search, State as JobState, SEARCH_BUDGET};

use super::overview::STATES;
use super::{chart_block, history, App, OrPage, PageError, PageResult, Range};
use crate::html::{self, esc, Ctx};

/// Jobs a page.
const PAGE: usize = 50;

/// The page's parameters.
struct Params {
    state: JobState,
    /// Where the page starts in the state's order.
    from: usize,
    name: String,
    text: String,
    range: Range,
}

impl Params {
    fn read(ctx: &Ctx, q: &HashMap<String, String>) -> Result<Params, PageError> {
        let state = match q.get("state").map(String::as_str) {
            None | Some("") => JobState::Pending,
            Some(s) => JobState::parse(s).or_page(ctx)?,
        };
        let from = match q.get("from").map(String::as_str) {
            None | Some("") => 0,
            // Redis positions are signed 64-bit: past them is no position.
            Some(f) => f
                .parse::<usize>()
                .ok()
                .filter(|f| i64::try_from(*f).is_ok())
                .ok_or_else(|| {
                    PageError::new(
                        ctx,
                        StatusCode::BAD_REQUEST,
                        "Bad request",
                        format!("from={f:?} is not a position"),
                    )
                })?,
        };
        Ok(Params {
            state,
            from,
            name: q.get("name").cloned().unwrap_or_default(),
            text: q.get("q").cloned().unwrap_or_default(),
            range: Range::parse(q.get("range").map(String::as_str)),
        })
    }

    /// The link to this queue's page with these parameters, `from` replaced.
    fn link(&self, ctx: &Ctx, queue: &str, state: JobState, from: usize) -> String {
        let mut query = format!("?state={}", state.name());
        if from > 0 {
            let _ = write!(query, "&from={from}");
        }
        if !self.name.is_empty() {
            let _ = write!(query, "&name={}", html::enc(&self.name));
        }
        if !self.text.is_empty() {
            let _ = write!(query, "&q={}", html::enc(&self.text));
        }
        ctx.href(&format!("/queues/{}{query}", html::enc(queue)))
    }
}

pub(super) async fn page(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let p = Params::read(&ctx, &q)?;
    app.admin.require_queue(&queue).await.or_page(&ctx)?;
    let search = Search::all()
        .name(p.name.clone())
        .matching(&p.text)
        .or_page(&ctx)?;
    let (stats, found, chart) = tokio::join!(
        app.admin.stats(&queue),
        app.admin.search(&queue, p.state, &search, p.from, PAGE),
        history(&app.admin, std::slice::from_ref(&queue), p.range, None),
    );
    let (stats, found, (steps, total)) = (
        stats.or_page(&ctx)?,
        found.or_page(&ctx)?,
        chart.or_page(&ctx)?,
    );
    let now = chrono::Utc::now().timestamp_millis();
    let qpath = format!("/queues/{}", html::enc(&queue));
    let mut body = String::new();
    let paused = if stats.paused {
        r#" <span class="badge warn">paused</span>"#
    } else {
        ""
    };
    let _ = write!(
        body,
        r#"<p class="crumbs"><a href="{}">Queues</a> /</p><div class="row"><h1>{}{paused}</h1><div class="actions">{}</div></div>"#,
        ctx.href("/"),
        esc(&queue),
        if stats.paused {
            ctx.button(&format!("{qpath}/resume"), "Resume", "primary", &[])
        } else {
            ctx.button(&format!("{qpath}/pause"), "Pause", "", &[])
        }
    );
    if let Some(done) = flash(&q) {
        let done = if q.get("more").is_some_and(|m| m == "1") {
            format!(
                "{done} More remain: run it again for the next {}.",
                html::num(super::actions::BULK_MAX)
            )
        } else {
            done
        };
        let _ = write!(body, r#"<p class="flash">{}</p>"#, esc(&done));
    }
    // The state tabs, with live counts.
    body.push_str(r#"<nav class="states">"#);
    for s in STATES {
        let class = if s == p.state { " class=\"on\"" } else { "" };
        let _ = write!(
            body,
            r#"<a href="{}"{class}>{} <b data-live="{}|{}">{}</b></a>"#,
            p.link(&ctx, &queue, s, 0),
            s.name(),
            esc(&queue),
            s.name(),
            html::num(stats.count(s))
        );
    }
    body.push_str("</nav>");
    // Search.
    let _ = write!(
        body,
        r#"<form method="get" action="{}" class="search"><input type="hidden" name="state" value="{}"><label>name <input name="name" value="{}" placeholder="billing.invoice"></label><label>arguments <input name="q" value="{}" placeholder="alice@example.com or $.user.id = 42"></label><button>Search</button></form>"#,
        ctx.href(&qpath),
        p.state.name(),
        html::attr(&p.name),
        html::attr(&p.text)
    );
    let _ = write!(
        body,
        r#"<form method="get" action="{}" class="search"><input type="hidden" name="state" value="{}"><label>find by id <input name="id" placeholder="01J…" class="mono"></label><button>Open</button></form>"#,
        ctx.href(&format!("{qpath}/find")),
        p.state.name()
    );
    body.push_str(&jobs_table(&ctx, &queue, &found.jobs, now));
    // Paging, and how far a search read.
    let state_total = stats.count(p.state);
    let searching = !search.is_all();
    body.push_str(r#"<div class="row paging">"#);
    if searching {
        let _ = write!(
            body,
            r#"<span>{} match(es) in entries {}–{} of {} (a search reads at most {} entries a page)</span>"#,
            found.jobs.len(),
            html::num(found.from as u64 + 1),
            html::num((found.from + found.scanned) as u64),
            html::num(state_total),
            html::num(SEARCH_BUDGET as u64)
        );
    } else if !found.jobs.is_empty() {
        let _ = write!(
            body,
            r#"<span>{}–{} of {}</span>"#,
            html::num(p.from as u64 + 1),
            html::num((p.from + found.jobs.len()) as u64),
            html::num(state_total)
        );
    }
    if p.from > 0 && !searching {
        let _ = write!(
            body,
            r#"<a href="{}">← newer</a>"#,
            p.link(&ctx, &queue, p.state, p.from.saturating_sub(PAGE))
        );
    }
    if let Some(next) = found.next {
        let label = if searching {
            "continue the search →"
        } else {
            "next →"
        };
        let _ = write!(
            body,
            r#"<a href="{}">{label}</a>"#,
            p.link(&ctx, &queue, p.state, next)
        );
    }
    body.push_str("</div>");
    // Bulk actions on the state, behind a confirmation page.
    if ctx.admin() && state_total > 0 && p.state != JobState::Active {
        body.push_str(r#"<div class="actions bulk">"#);
        let confirm = |action: &str| {
            let mut link = format!("{qpath}/confirm?action={action}&state={}", p.state.name());
            if !p.name.is_empty() {
                let _ = write!(link, "&name={}", html::enc(&p.name));
            }
            if !p.text.is_empty() {
                let _ = write!(link, "&q={}", html::enc(&p.text));
            }
            ctx.href(&link)
        };
        let scope = if searching { "matching" } else { "all" };
        if retryable(p.state) {
            let _ = write!(
                body,
                r#"<a class="button" href="{}">Retry {scope} {} jobs…</a>"#,
                confirm("retry"),
                p.state.name()
            );
        }
        let _ = write!(
            body,
            r#"<a class="button danger" href="{}">Delete {scope} {} jobs…</a>"#,
            confirm("delete"),
            p.state.name()
        );
        body.push_str("</div>");
    }
    body.push_str(&chart_block(&ctx, &qpath, p.range, &steps, &total));
    Ok(Html(html::page(&ctx, &queue, "", &body)).into_response())
}

/// States whose jobs a retry runs again now.
pub(super) fn retryable(state: JobState) -> bool {
    matches!(
        state,
        JobState::Dead | JobState::Scheduled | JobState::Retrying | JobState::Recovered
    )
}

/// The message a finished action left in the link (`?done=retried&n=12`): fixed words and a
/// number, so a crafted link cannot make the page say anything else.
fn flash(q: &HashMap<String, String>) -> Option<String> {
    let verb = match q.get("done")?.as_str() {
        "retried" => "Retried",
        "deleted" => "Deleted",
        "paused" => return Some("Paused: workers take no new job from this queue.".into()),
        "resumed" => return Some("Resumed.".into()),
        _ => return None,
    };
    let n: u64 = q.get("n")?.parse().ok()?;
    Some(format!("{verb} {} job(s).", html::num(n)))
}

fn jobs_table(ctx: &Ctx, queue: &str, jobs: &[JobView], now: i64) -> String {
    let mut t = String::from(
        r#"<section class="card"><div class="scroll"><table class="jobs"><thead><tr><th>id</th><th>name</th><th class="n">attempts</th><th>created</th><th>at</th><th>last error</th></tr></thead><tbody>"#,
    );
    if jobs.is_empty() {
        t.push_str(r#"<tr><td colspan="6" class="empty">No job here.</td></tr>"#);
    }
    for v in jobs {
        let link = ctx.href(&format!(
            "/queues/{}/jobs/{}?state={}",
            html::enc(queue),
            html::enc(v.id.as_str()),
            v.state.name()
        ));
        let (name, attempts, created, error) = match &v.job {
            Ok(j) => (
                esc(&j.name),
                format!("{} / {}", j.failed, j.max_attempts()),
                html::when(Some(j.created_ms), now),
                j.last_error()
                    .map(|f| f.summary())
                    .or_else(|| v.outcome.as_ref().and_then(|o| o.error.clone()))
                    .map(|e| esc(&e))
                    .unwrap_or_default(),
            ),
            Err(e) => (
                r#"<span class="badge danger">undecodable</span>"#.to_string(),
                "-".into(),
                "-".into(),
                esc(e),
            ),
        };
        let _ = write!(
            t,
            r#"<tr><td><a class="mono" href="{link}">{}</a></td><td>{name}</td><td class="n">{attempts}</td><td>{created}</td><td>{}</td><td class="error">{error}</td></tr>"#,
            esc(v.id.as_str()),
            html::when(v.at_ms, now)
        );
    }
    t.push_str("</tbody></table></div></section>");
    t
}

/// `/queues/{queue}/confirm?action=retry|delete&state=..[&name=&q=]`: what a bulk action will
/// do, and the button that does it.
pub(super) async fn confirm(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path(queue): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let p = Params::read(&ctx, &q)?;
    let action = match q.get("action").map(String::as_str) {
        Some("retry") if retryable(p.state) => "retry",
        Some("delete") if p.state != JobState::Active => "delete",
        _ => {
            return Err(PageError::new(
                &ctx,
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!("no such action on {} jobs", p.state.name()),
            ))
        }
    };
    app.admin.require_queue(&queue).await.or_page(&ctx)?;
    let search = Search::all()
        .name(p.name.clone())
        .matching(&p.text)
        .or_page(&ctx)?;
    let stats = app.admin.stats(&queue).await.or_page(&ctx)?;
    let total = stats.count(p.state);
    let what = if search.is_all() {
        format!("all {} {} jobs", html::num(total), p.state.name())
    } else {
        let mut w = format!("the {} jobs", p.state.name());
        if !p.name.is_empty() {
            let _ = write!(w, " named {:?}", p.name);
        }
        if !p.text.is_empty() {
            let _ = write!(w, " matching {:?}", p.text);
        }
        let _ = write!(w, " (of {})", html::num(total));
        w
    };
    let verb = if action == "retry" { "Retry" } else { "Delete" };
    let title = format!("{verb} {what} of {queue}?");
    let qpath = format!("/queues/{}", html::enc(&queue));
    let fields = [
        ("action", action),
        ("state", p.state.name()),
        ("name", p.name.as_str()),
        ("q", p.text.as_str()),
    ];
    let body = format!(
        r#"<p class="crumbs"><a href="{}">Queues</a> / <a href="{}">{}</a></p><h1>{}</h1><p>{}</p><div class="actions">{}<a href="{}">Cancel</a></div>"#,
        ctx.href("/"),
        ctx.href(&qpath),
        esc(&queue),
        esc(&title),
        if action == "delete" {
            "Deleted jobs are gone for good."
        } else {
            "Each runs again now with a fresh set of attempts."
        },
        ctx.button(
            &format!("{qpath}/bulk"),
            &format!("{verb} {what}"),
            if action == "delete" {
                "danger"
            } else {
                "primary"
            },
            &fields
        ),
        p.link(&ctx, &queue, p.state, 0)
    );
    Ok(Html(html::page(&ctx, &title, "", &body)).into_response())
}
