//! The web dashboard of `queue`: every queue's counts and history charts, jobs by state with
//! paging and search by argument content, a job's arguments, result, errors and lifecycle,
//! retries, deletes, pauses and purges, workers and cron schedules, with live counts.
//!
//! Server-rendered HTML with a little embedded CSS and vanilla JS (no build step), charts as
//! inline SVG. Two ways to run it:
//!
//! - mounted in an application's own axum app, behind the application's own auth:
//!
//!   ```no_run
//!   # async fn demo(admin: queue_core::admin::Admin) {
//!   let app: axum::Router = axum::Router::new()
//!       .nest("/admin/queues", queue_web::Dashboard::new(admin).router());
//!   # }
//!   ```
//!
//! - standalone, `queue web --addr 127.0.0.1:8080` ([`Dashboard::serve`]), with its own auth:
//!   tokens or basic-auth users, each an [`Role::Admin`] or a [`Role::ReadOnly`] one.
//!
//! Every action is a `POST` carrying a CSRF token bound to the signed-in user, refused for a
//! read-only one. Reads are bounded whatever the queue's size (docs/BENCHMARKS.md has the
//! page timings at 1,000,000 jobs; each response carries a `Server-Timing` header).
//!
//! Layout: [`auth`](crate::auth) (who asks, and the CSRF token), `html` (escaping and the page
//! frame), `chart` (SVG), `pages/` (one file a page, and `actions` for the POSTs), `assets/`.

#![deny(unreachable_pub)]
#![warn(missing_docs)]

mod auth;
mod chart;
mod error;
mod html;
mod pages;

use std::sync::Arc;

use axum::Router;
use queue_core::admin::Admin;

pub use auth::Role;
pub use error::{Error, Result};

/// The dashboard over one namespace's queues: build it, then take its [`Dashboard::router`] or
/// [`Dashboard::serve`] it.
#[derive(Debug, Clone)]
pub struct Dashboard {
    admin: Admin,
    users: Vec<auth::User>,
    read_only: bool,
    local_only: bool,
}

impl Dashboard {
    /// A dashboard reading and changing queues through `admin` (its client's namespace).
    /// Without [`Dashboard::token`] or [`Dashboard::basic`] everyone who reaches it is an
    /// admin: mount it behind your own auth, or make it [`Dashboard::read_only`].
    pub fn new(admin: Admin) -> Dashboard {
        Dashboard {
            admin,
            users: Vec::new(),
            read_only: false,
            local_only: false,
        }
    }

    /// Let in whoever presents `token` (an `Authorization: Bearer` header, or the login
    /// form, which keeps it in a cookie) as `role`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a token shorter than 16 characters.
    pub fn token(mut self, role: Role, token: impl Into<String>) -> Result<Dashboard> {
        let token = token.into();
        if token.chars().count() < 16 {
            return Err(Error::Config(
                "a dashboard token has at least 16 characters".into(),
            ));
        }
        self.users.push(auth::User::token(role, token));
        Ok(self)
    }

    /// Let in `user` with `password` (HTTP basic auth, or the login form) as `role`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty user, a user with `:`, or a password shorter than 8.
    pub fn basic(
        mut self,
        role: Role,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Dashboard> {
        let (user, password) = (user.into(), password.into());
        if user.is_empty() || user.contains(':') {
            return Err(Error::Config(format!(
                "a dashboard user name is not empty and has no ':': {user:?}"
            )));
        }
        if password.chars().count() < 8 {
            return Err(Error::Config(format!(
                "the password of dashboard user {user:?} has at least 8 characters"
            )));
        }
        self.users.push(auth::User::basic(role, user, password));
        Ok(self)
    }

    /// Shows everything and changes nothing, whoever asks (the actions are neither shown nor
    /// accepted).
    pub fn read_only(mut self, read_only: bool) -> Dashboard {
        self.read_only = read_only;
        self
    }

    /// Answers only requests whose `Host` is `localhost` or a loopback address (others get
    /// 421). For a dashboard without sign-in on a loopback address: a web page the operator
    /// visits could otherwise reach it through DNS rebinding. `queue web` sets it when it has
    /// no user.
    pub fn local_only(mut self, local_only: bool) -> Dashboard {
        self.local_only = local_only;
        self
    }

    /// The dashboard as an axum router, to nest anywhere (`Router::nest("/admin", ..)`): its
    /// links follow the path it is mounted at.
    pub fn router(self) -> Router {
        let app = pages::App {
            admin: self.admin.clone(),
            cron: queue_core::cron::Cron::new(self.admin.client().clone()),
            auth: Arc::new(auth::Auth::new(self.users, self.read_only)),
            local_only: self.local_only,
            live: pages::Hub::default(),
        };
        pages::router(app)
    }

    /// Serves the dashboard on `listener` until `shutdown` completes (then lets open requests
    /// finish, at most 5 s).
    ///
    /// # Errors
    ///
    /// [`Error::Serve`] when the listener fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it closes the listener.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let app = self.router();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
        tokio::select! {
            r = &mut server => return r.map_err(Error::Serve),
            _ = stop_rx.wait_for(|s| *s) => {}
        }
        // Graceful, but an open event stream or a stuck client does not hold the exit.
        match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
            Ok(r) => r.map_err(Error::Serve),
            Err(_) => Ok(()),
        }
    }
}
