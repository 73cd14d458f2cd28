//! Every action, a `POST` from a form carrying its CSRF token (the gate has already refused
//! read-only users and cross-site posts). Each answers with a redirect to the page it changed
//! (post/redirect/get), which says what was done.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use queue_core::admin::{Bulk, Query as Search, State as JobState};

use super::{check_csrf, App, OrPage, PageError, PageResult};
use crate::html::{enc, Ctx};

type Fields = Form<HashMap<String, String>>;

/// The most jobs one bulk request changes: a request stays short (a proxy's timeout, a closed
/// tab), and the page says when more remain.
pub(super) const BULK_MAX: u64 = 10_000;

fn csrf(app: &App, ctx: &Ctx, form: &HashMap<String, String>) -> Result<(), PageError> {
    check_csrf(app, ctx, form.get("csrf").map_or("", String::as_str))
}

fn to(ctx: &Ctx, path: &str) -> axum::response::Response {
    Redirect::to(&format!("{}{path}", ctx.base)).into_response()
}

pub(super) async fn pause(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path(queue): Path<String>,
    Form(form): Fields,
) -> PageResult {
    set_paused(&app, &ctx, &queue, &form, true).await
}

pub(super) async fn resume(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path(queue): Path<String>,
    Form(form): Fields,
) -> PageResult {
    set_paused(&app, &ctx, &queue, &form, false).await
}

async fn set_paused(
    app: &App,
    ctx: &Ctx,
    queue: &str,
    form: &HashMap<String, String>,
    paused: bool,
) -> PageResult {
    csrf(app, ctx, form)?;
    app.admin.require_queue(queue).await.or_page(ctx)?;
    let client = app.admin.client();
    let (changed, done) = if paused {
        (client.pause(queue).await, "paused")
    } else {
        (client.resume(queue).await, "resumed")
    };
    changed.or_page(ctx)?;
    Ok(to(ctx, &format!("/queues/{}?done={done}", enc(queue))))
}

/// Retry or delete every job of a state (matching the search, when there is one).
pub(super) async fn bulk(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path(queue): Path<String>,
    Form(form): Fields,
) -> PageResult {
    csrf(&app, &ctx, &form)?;
    let field = |k: &str| form.get(k).map_or("", String::as_str);
    let state = JobState::parse(field("state")).or_page(&ctx)?;
    let (bulk, done) = match field("action") {
        "retry" => (Bulk::Retry, "retried"),
        "delete" => (Bulk::Delete, "deleted"),
        other => {
            return Err(PageError::new(
                &ctx,
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!("no such action {other:?}"),
            ))
        }
    };
    let search = Search::all()
        .name(field("name"))
        .matching(field("q"))
        .or_page(&ctx)?;
    app.admin.require_queue(&queue).await.or_page(&ctx)?;
    let r = app
        .admin
        .apply_all(&queue, state, &search, bulk, BULK_MAX, |_| {})
        .await
        .or_page(&ctx)?;
    Ok(to(
        &ctx,
        &format!(
            "/queues/{}?state={}&done={done}&n={}{}",
            enc(&queue),
            state.name(),
            r.changed,
            if r.finished { "" } else { "&more=1" }
        ),
    ))
}

async fn one(
    app: &App,
    ctx: &Ctx,
    queue: &str,
    id: &str,
    form: &HashMap<String, String>,
    bulk: Bulk,
) -> Result<queue_core::admin::JobView, PageError> {
    app.admin.require_queue(queue).await.or_page(ctx)?;
    // The form says which state the page showed: the lookup stays bounded (see find_quick).
    let state = form.get("state").and_then(|s| JobState::parse(s).ok());
    let Some(v) = app.admin.find_quick(id, queue, state).await.or_page(ctx)? else {
        return Err(PageError::new(
            ctx,
            StatusCode::NOT_FOUND,
            "Not found",
            format!("no job {id:?} in {queue:?}"),
        ));
    };
    // The button was for the state the page showed; the job may have moved since.
    let applies = match bulk {
        Bulk::Retry => super::queue::retryable(v.state),
        _ => v.state != JobState::Active,
    };
    if !applies {
        return Err(PageError::new(
            ctx,
            StatusCode::CONFLICT,
            "Changed meanwhile",
            format!("job {id} is {} now: look again", v.state.name()),
        ));
    }
    let n = match bulk {
        Bulk::Retry => app.admin.retry(std::slice::from_ref(&v)).await,
        _ => app.admin.delete(std::slice::from_ref(&v)).await,
    }
    .or_page(ctx)?;
    if n == 0 {
        return Err(PageError::new(
            ctx,
            StatusCode::CONFLICT,
            "Changed meanwhile",
            format!(
                "job {id} is {} and could not be changed: look again",
                v.state.name()
            ),
        ));
    }
    Ok(v)
}

pub(super) async fn retry(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path((queue, id)): Path<(String, String)>,
    Form(form): Fields,
) -> PageResult {
    csrf(&app, &ctx, &form)?;
    let v = one(&app, &ctx, &queue, &id, &form, Bulk::Retry).await?;
    Ok(to(
        &ctx,
        &format!(
            "/queues/{}/jobs/{}?done=retried",
            enc(&queue),
            enc(v.id.as_str())
        ),
    ))
}

pub(super) async fn delete(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path((queue, id)): Path<(String, String)>,
    Form(form): Fields,
) -> PageResult {
    csrf(&app, &ctx, &form)?;
    let v = one(&app, &ctx, &queue, &id, &form, Bulk::Delete).await?;
    Ok(to(
        &ctx,
        &format!(
            "/queues/{}?state={}&done=deleted&n=1",
            enc(&queue),
            v.state.name()
        ),
    ))
}

pub(super) async fn cron(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Fields,
) -> PageResult {
    csrf(&app, &ctx, &form)?;
    let done = match action.as_str() {
        "pause" => {
            app.cron.set_paused(&name, true).await.or_page(&ctx)?;
            "paused"
        }
        "resume" => {
            app.cron.set_paused(&name, false).await.or_page(&ctx)?;
            "resumed"
        }
        "trigger" => {
            app.cron.trigger(&name).await.or_page(&ctx)?;
            "triggered"
        }
        _ => {
            return Err(PageError::new(
                &ctx,
                StatusCode::NOT_FOUND,
                "Not found",
                "no such action",
            ));
        }
    };
    Ok(to(&ctx, &format!("/cron?done={done}")))
}
