//! `queue web --addr`: the web dashboard, standalone, with its own sign-in.

use std::process::ExitCode;

use anyhow::Context;
use queue::web::{Dashboard, Role};

use crate::output::Out;
use crate::Global;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", env = "QUEUE_WEB_ADDR")]
    addr: String,
    /// An admin's token (at least 16 characters) [env: QUEUE_WEB_TOKEN]
    #[arg(long, env = "QUEUE_WEB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A read-only user's token [env: QUEUE_WEB_READ_TOKEN]
    #[arg(long, env = "QUEUE_WEB_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// An admin as USER:PASSWORD (basic auth or the login form) [env: QUEUE_WEB_USER]
    #[arg(long, env = "QUEUE_WEB_USER", hide_env_values = true)]
    user: Option<String>,
    /// A read-only user as USER:PASSWORD [env: QUEUE_WEB_READ_USER]
    #[arg(long, env = "QUEUE_WEB_READ_USER", hide_env_values = true)]
    read_user: Option<String>,
    /// Show everything, change nothing, whoever signs in
    #[arg(long)]
    read_only: bool,
    /// Serve without sign-in on an address other than loopback (anyone who reaches it is an
    /// admin unless --read-only)
    #[arg(long)]
    no_auth: bool,
}

// Every field is named so that a new secret cannot slip into a log.
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("addr", &self.addr)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

fn basic(d: Dashboard, role: Role, spec: &str, flag: &str) -> anyhow::Result<Dashboard> {
    let (user, password) = spec
        .split_once(':')
        .with_context(|| format!("{flag} is USER:PASSWORD"))?;
    Ok(d.basic(role, user, password)?)
}

pub async fn run(g: &Global, out: Out, a: Args) -> anyhow::Result<ExitCode> {
    let addr: std::net::SocketAddr = a.addr.parse().with_context(|| {
        format!(
            "--addr {:?} is not an address such as 127.0.0.1:8080",
            a.addr
        )
    })?;
    let admin = g.connect().await?;
    let mut d = Dashboard::new(admin).read_only(a.read_only);
    let mut users = 0;
    if let Some(t) = &a.token {
        d = d.token(Role::Admin, t.as_str())?;
        users += 1;
    }
    if let Some(t) = &a.read_token {
        d = d.token(Role::ReadOnly, t.as_str())?;
        users += 1;
    }
    if let Some(u) = &a.user {
        d = basic(d, Role::Admin, u, "--user")?;
        users += 1;
    }
    if let Some(u) = &a.read_user {
        d = basic(d, Role::ReadOnly, u, "--read-user")?;
        users += 1;
    }
    if users == 0 && !a.no_auth {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "{addr} is reachable from other machines: give --token or --user (or --no-auth to serve it open)"
            );
        }
        // Open on loopback: only for requests to localhost, so that no web page can reach
        // it through DNS rebinding.
        d = d.local_only(true);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let auth = match (users, a.read_only) {
        (0, false) => "no sign-in: everyone is an admin",
        (0, true) => "no sign-in, read-only",
        (_, _) => "sign-in required",
    };
    if out.json {
        out.json(&serde_json::json!({ "listening": format!("http://{local}/"), "auth": auth }))?;
    } else {
        out.line(&format!(
            "dashboard on http://{local}/ ({auth}); Ctrl-C stops it"
        ))?;
    }
    d.serve(listener, stop_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM (a service manager's stop).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
