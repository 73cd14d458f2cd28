//! An axum app whose sessions live in Redis through `tower-sessions`, on the store from
//! `queue` (Redis keeps only a hash of each session id).
//!
//! ```sh
//! cargo run --example sessions_api -- --addr 127.0.0.1:3001
//! curl -i -c jar -b jar http://127.0.0.1:3001/   # visits: 1, then 2, 3... with the cookie
//! ```

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use queue::session::RedisSessionStore;
use queue::testing::RedisServer;
use queue::Client;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

async fn visits(session: Session) -> String {
    let n: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    if let Err(e) = session.insert("visits", n).await {
        return format!("session error: {e}\n");
    }
    format!("visits: {n}\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .iter()
        .position(|a| a == "--addr")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "127.0.0.1:3001".into())
        .parse()?;
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(u) => (None, u),
        Err(_) => {
            let s = RedisServer::start()?;
            let u = s.url().to_string();
            (Some(s), u)
        }
    };
    let store = RedisSessionStore::new(Client::connect(&url).await?);
    let sessions = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)));
    let app = Router::new().route("/", get(visits)).layer(sessions);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("serving on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
