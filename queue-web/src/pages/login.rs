//! `/login` and `/logout`: the standalone server's sign-in form, which sets the signed session
//! cookie (`HttpOnly`, `SameSite=Strict`, scoped to the dashboard's path).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::{check_csrf, App, PageResult};
use crate::auth::COOKIE;
use crate::html::{self, esc, Ctx};

/// Where to go after signing in: a path of the dashboard, never another site.
fn next_path(q: &HashMap<String, String>) -> String {
    match q.get("next") {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.clone(),
        _ => "/".into(),
    }
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
        esc(next)
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
    let path = if ctx.base.is_empty() {
        "/"
    } else {
        ctx.base.as_str()
    };
    let cookie = format!("{COOKIE}={value}; Path={path}; HttpOnly; SameSite=Strict");
    let mut res = Redirect::to(&format!("{}{next}", ctx.base)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

pub(super) async fn logout(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<HashMap<String, String>>,
) -> PageResult {
    check_csrf(&app, &ctx, f.get("csrf").map_or("", String::as_str))?;
    let path = if ctx.base.is_empty() {
        "/"
    } else {
        ctx.base.as_str()
    };
    let mut res = Redirect::to(&format!("{}/login", ctx.base)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict"
    )) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}
