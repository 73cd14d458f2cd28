//! The routes: one file a page, `actions` for every POST, `live` for the event stream, and
//! here the router, the middleware that tells who asks and where the dashboard is mounted,
//! and what pages share (the error page, the history ranges).

mod actions;
mod job;
mod live;

pub(crate) use live::Hub;
mod login;
mod overview;
mod queue;
mod schedules;
mod workers;

use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use queue_core::admin::{Admin, HistoryStep, Minute};
use queue_core::cron::Cron;

use crate::auth::Auth;
use crate::html::{self, Ctx};

/// What every handler works with.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) admin: Admin,
    pub(crate) cron: Cron,
    pub(crate) auth: Arc<Auth>,
    /// Answer only requests addressed to this machine by name (`localhost`, a loopback
    /// address): an open dashboard on loopback is otherwise readable by any web page the
    /// operator visits, through DNS rebinding.
    pub(crate) local_only: bool,
    /// The counts every `/live` stream sends, read once for all of them.
    pub(crate) live: live::Hub,
}

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/queues/{queue}", get(queue::page))
        .route("/queues/{queue}/confirm", get(queue::confirm))
        .route("/queues/{queue}/pause", post(actions::pause))
        .route("/queues/{queue}/resume", post(actions::resume))
        .route("/queues/{queue}/bulk", post(actions::bulk))
        .route("/queues/{queue}/find", get(job::find))
        .route("/queues/{queue}/jobs/{id}", get(job::page))
        .route("/queues/{queue}/jobs/{id}/retry", post(actions::retry))
        .route("/queues/{queue}/jobs/{id}/delete", post(actions::delete))
        .route("/workers", get(workers::page))
        .route("/cron", get(schedules::page))
        .route("/cron/{name}/{action}", post(actions::cron))
        .route("/live", get(live::stream))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app)
}

/// Every request: where the dashboard is mounted, who asks (or the way to the login), the
/// refusal of cross-site and read-only writes, and the `Server-Timing` header.
async fn gate(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let inner = req.uri().path().to_string();
    // Nested at `/admin`, `/admin` itself arrives as `/`.
    let base = req
        .extensions()
        .get::<OriginalUri>()
        .map(|o| o.path().to_string())
        .and_then(|full| {
            if inner == "/" {
                Some(full)
            } else {
                full.strip_suffix(inner.as_str()).map(str::to_string)
            }
        })
        .unwrap_or_default();
    let base = base.trim_end_matches('/').to_string();
    if app.local_only && !local_host(&req) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers requests to localhost only\n",
        )
            .into_response();
    }
    // Browsers say where a form came from; a cross-site post is refused before anything else
    // (the CSRF token would refuse it too; the login form has none).
    let cross = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    if req.method() == Method::POST && cross {
        return (
            StatusCode::FORBIDDEN,
            "a form from another site cannot act here\n",
        )
            .into_response();
    }
    let open = inner == "/login" || inner.starts_with("/assets/");
    let user = app.auth.identify(req.headers());
    let Some(user) = user.or_else(|| open.then(|| app.auth.anonymous())) else {
        return sign_in(&app, &base, &req);
    };
    let ctx = Ctx {
        base,
        user,
        started,
    };
    if req.method() == Method::POST && inner != "/login" {
        // Browsers say where a form came from; a cross-site post is refused before its body is
        // read (the CSRF token would refuse it too).
        let cross = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site");
        if cross {
            return refuse(
                &ctx,
                StatusCode::FORBIDDEN,
                "Refused",
                "a form from another site cannot act here",
            );
        }
        if !ctx.admin() && inner != "/logout" {
            return refuse(
                &ctx,
                StatusCode::FORBIDDEN,
                "Read-only",
                "this user may look but not change anything",
            );
        }
    }
    req.extensions_mut().insert(ctx);
    let mut res = next.run(req).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        res.headers_mut().insert("server-timing", v);
    }
    let h = res.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !inner.starts_with("/assets/") {
        // Pages carry job arguments and CSRF tokens: not for a shared cache or the back button.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Whether the request's `Host` names this machine (`localhost`, `127.0.0.1`, `[::1]`, any
/// port).
fn local_host(req: &Request) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        // HTTP/1.0 without a Host: not a browser following a rebound name.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1") || name.ends_with(".localhost")
}

/// Where an unknown visitor goes: the login form for a page in a browser, a 401 otherwise
/// (with a basic-auth challenge when basic users exist, so a browser asks).
fn sign_in(app: &App, base: &str, req: &Request) -> Response {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        // A form posted with a session that ended (a restart signs everyone out) comes back to
        // the login too, then to the page.
        let next = if req.method() == Method::GET {
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        } else {
            "/"
        };
        return Redirect::to(&format!("{base}/login?next={}", html::enc(next))).into_response();
    }
    let mut res = (
        StatusCode::UNAUTHORIZED,
        "sign in: a bearer token or basic auth\n",
    )
        .into_response();
    if app.auth.has_basic() {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"queue\""),
        );
    }
    res
}

fn refuse(ctx: &Ctx, status: StatusCode, title: &str, text: &str) -> Response {
    (status, Html(html::message(ctx, title, text))).into_response()
}

/// A page's failure, shown as a page: Redis unreachable, a queue or job not found, a bad
/// parameter.
#[derive(Debug)]
pub(crate) struct PageError(Box<Failure>);

#[derive(Debug)]
struct Failure {
    status: StatusCode,
    title: &'static str,
    text: String,
    ctx: Ctx,
}

impl PageError {
    pub(crate) fn new(
        ctx: &Ctx,
        status: StatusCode,
        title: &'static str,
        text: impl Into<String>,
    ) -> PageError {
        PageError(Box::new(Failure {
            status,
            title,
            text: text.into(),
            ctx: ctx.clone(),
        }))
    }

    /// A failure of the queue library: not found (404), bad input (400), Redis (503).
    pub(crate) fn of(ctx: &Ctx, e: queue_core::Error) -> PageError {
        use queue_core::ErrorKind as K;
        let (status, title) = match e.kind() {
            K::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            K::Config | K::InvalidJob => (StatusCode::BAD_REQUEST, "Bad request"),
            K::Permission => (StatusCode::FORBIDDEN, "Refused by Redis"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "Redis did not answer"),
        };
        PageError::new(ctx, status, title, e.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let f = self.0;
        (f.status, Html(html::message(&f.ctx, f.title, &f.text))).into_response()
    }
}

/// Pages answer this.
pub(crate) type PageResult = Result<Response, PageError>;

/// Maps a library result into a page error with the request's context.
pub(crate) trait OrPage<T> {
    fn or_page(self, ctx: &Ctx) -> Result<T, PageError>;
}

impl<T> OrPage<T> for queue_core::Result<T> {
    fn or_page(self, ctx: &Ctx) -> Result<T, PageError> {
        self.map_err(|e| PageError::of(ctx, e))
    }
}

/// Checks the form's CSRF token.
pub(crate) fn check_csrf(app: &App, ctx: &Ctx, token: &str) -> Result<(), PageError> {
    if app.auth.csrf_ok(&ctx.user, token) {
        return Ok(());
    }
    Err(PageError::new(
        ctx,
        StatusCode::FORBIDDEN,
        "Refused",
        "the form's CSRF token is missing or belongs to another session: reload the page and try again",
    ))
}

/// The history spans the charts offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    Hour,
    Day,
    ThreeDays,
}

impl Range {
    pub(crate) const ALL: [Range; 3] = [Range::Hour, Range::Day, Range::ThreeDays];

    pub(crate) fn parse(s: Option<&str>) -> Range {
        match s {
            Some("24h") => Range::Day,
            Some("72h") => Range::ThreeDays,
            _ => Range::Hour,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::ThreeDays => "72h",
        }
    }

    /// (minutes, minutes a step): 60 bars of a minute, or 24 and 72 bars of an hour (read
    /// from the hourly hashes: 24 and 72 reads a queue rather than 1,440 and 4,320).
    fn shape(self) -> (i64, usize) {
        match self {
            Range::Hour => (60, 1),
            Range::Day => (24 * 60, 60),
            Range::ThreeDays => (72 * 60, 60),
        }
    }
}

/// The last `range` of `queues`' history, every queue added up, in the range's steps; and the
/// whole span's counts (for its percentiles).
pub(crate) async fn history(
    admin: &Admin,
    queues: &[String],
    range: Range,
    name: Option<&str>,
) -> queue_core::Result<(Vec<HistoryStep>, queue_core::admin::Counts)> {
    let (span, step) = range.shape();
    let now = chrono::Utc::now().timestamp_millis();
    let per_queue: Vec<Vec<Minute>> = if step == 60 {
        let from = (now.div_euclid(3_600_000) - span / 60 + 1) * 3_600_000;
        futures_util::future::try_join_all(queues.iter().map(|q| admin.history_hours(q, from, now)))
            .await?
    } else {
        let from = (queue_core::admin::minute_of(now) - span + 1) * 60_000;
        futures_util::future::try_join_all(queues.iter().map(|q| admin.history(q, from, now)))
            .await?
    };
    // Hours come one an entry already.
    let step = if step == 60 { 1 } else { step };
    let mut sum: Vec<Minute> = Vec::new();
    for minutes in per_queue {
        if sum.is_empty() {
            sum = minutes;
            continue;
        }
        for (into, m) in sum.iter_mut().zip(minutes) {
            for (n, c) in m.names {
                into.names.entry(n).or_default().merge(&c);
            }
        }
    }
    let steps = queue_core::admin::history_steps(&sum, step, name);
    let mut total = queue_core::admin::Counts::default();
    for s in &steps {
        total.merge(&s.counts);
    }
    Ok((steps, total))
}

/// The range tabs and the chart of a history.
pub(crate) fn chart_block(
    ctx: &Ctx,
    path: &str,
    range: Range,
    steps: &[HistoryStep],
    total: &queue_core::admin::Counts,
) -> String {
    let tabs: String = Range::ALL
        .iter()
        .map(|r| {
            let class = if *r == range { " class=\"on\"" } else { "" };
            format!(
                r#"<a href="{}?range={}"{class}>{}</a>"#,
                ctx.href(path),
                r.name(),
                r.name()
            )
        })
        .collect();
    format!(
        r#"<section class="card"><div class="row"><h2>Completed and failed, last {range}</h2><nav class="tabs">{tabs}</nav></div>
{chart}
<dl class="figures"><div><dt>completed</dt><dd>{done}</dd></div><div><dt>failed</dt><dd>{failed}</dd></div><div><dt>failure rate</dt><dd>{rate:.1} %</dd></div><div><dt>wait p50 / p95 / p99</dt><dd>{w50} / {w95} / {w99}</dd></div><div><dt>run p50 / p99</dt><dd>{r50} / {r99}</dd></div></dl></section>"#,
        range = range.name(),
        chart = crate::chart::bars(steps, "completed and failed attempts"),
        done = html::num(total.completed),
        failed = html::num(total.failed),
        rate = total.failure_rate() * 100.0,
        w50 = html::ms(total.wait.quantile(0.5)),
        w95 = html::ms(total.wait.quantile(0.95)),
        w99 = html::ms(total.wait.quantile(0.99)),
        r50 = html::ms(total.run.quantile(0.5)),
        r99 = html::ms(total.run.quantile(0.99)),
    )
}

async fn not_found(axum::Extension(ctx): axum::Extension<Ctx>) -> Response {
    refuse(&ctx, StatusCode::NOT_FOUND, "Not found", "no such page")
}

async fn css() -> Response {
    asset("text/css", include_str!("../../assets/app.css"))
}

async fn js() -> Response {
    asset("text/javascript", include_str!("../../assets/app.js"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}
