//! `/login` and `/logout`: the standalone server's sign-in form, which sets the signed session
//! cookie (`HttpOnly`, `SameSite=Strict`, scoped to the dashboard's path).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::{check_csrf, App, PageResult};
use crate::auth::COOKIE;
use crate::html::{self, Ctx};

/// Where to go after signing in: a path of the dashboard, never another site (visible ASCII
/// only: browsers drop a tab or a newline and would read `/\t/evil` as `//evil`).
fn next_path(q: &HashMap<String, String>) -> String {
    match q.get("next") {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.clone()
        }
        _ => "/".into(),
    }
}

/// The cookie's attributes: scoped to the dashboard's path, `Secure` when the request came
/// over HTTPS (a proxy says so with `X-Forwarded-Proto`).
fn cookie_attributes(ctx: &Ctx, headers: &axum::http::HeaderMap) -> String {
    let path = if ctx.base.is_empty() {
        "/"
    } else {
        ctx.base.as_str()
    };
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!(
        "Path={path}; HttpOnly; SameSite=Strict{}",
        if https { "; Secure" } else { "" }
    )
}

fn form_page(app: &App, ctx: &Ctx, next: &str, failed: bool) -> String {
    let mut fields = String::new();
    if app.auth.has_basic() {
        fields.push_str(r#"<label>user <input name="user" autocomplete="username"></label><label>password <input name="secret" type="password" autocomplete="current-password"></label>"#);
    } else if app.auth.has_token() {
        fields.push_str(r#"<input type="hidden" name="user" value=""><label>token <input name="secret" type="password" autocomplete="current-password"></label>"#);
    }
    let hint = if app.auth.has_basic() && app.auth.has_token() {
        "<p>With a token, leave the user empty.</p>"
    } else {
        ""
    };
    let error = if failed {
        r#"<p class="flash danger">Not signed in: wrong credentials.</p>"#
    } else {
        ""
    };
    let body = format!(
        r#"<h1>Sign in</h1>{error}<form method="post" action="{}" class="login"><input type="hidden" name="next" value="{}">{fields}<button class="primary">Sign in</button></form>{hint}"#,
        ctx.href("/login"),
        html::attr(next)
    );
    html::page(ctx, "Sign in", "", &body)
}

pub(super) async fn form(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    Html(form_page(&app, &ctx, &next_path(&q), false)).into_response()
}

pub(super) async fn submit(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    headers: axum::http::HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let next = next_path(&f);
    let user = f.get("user").map_or("", String::as_str);
    let secret = f.get("secret").map_or("", String::as_str);
    let Some(value) = app.auth.login(user, secret) else {
        return (
            StatusCode::UNAUTHORIZED,
            Html(form_page(&app, &ctx, &next, true)),
        )
            .into_response();
    };
    let cookie = format!(
        "{COOKIE}={value}; Max-Age={}; {}",
        crate::auth::SESSION_MAX.as_secs(),
        cookie_attributes(&ctx, &headers)
    );
    let mut res = Redirect::to(&ctx.url(&next)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

pub(super) async fn logout(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    headers: axum::http::HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> PageResult {
    check_csrf(&app, &ctx, f.get("csrf").map_or("", String::as_str))?;
    let mut res = Redirect::to(&ctx.url("/login")).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Max-Age=0; {}",
        cookie_attributes(&ctx, &headers)
    )) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}
