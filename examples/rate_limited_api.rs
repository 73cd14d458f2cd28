//! An API limited to 10 requests per second per client IP; the admin key bypasses the limit.
//!
//! ```sh
//! cargo run --example rate_limited_api -- --addr 127.0.0.1:3000 --admin-key s3cret
//! curl -i http://127.0.0.1:3000/                       # RateLimit-* headers; 429 past 10/s
//! curl -i -H 'x-api-key: s3cret' http://127.0.0.1:3000/ # never limited
//! ```
//!
//! Behind a reverse proxy, `--trusted-proxies 10.0.0.0/8,fd00::/8` keys requests that come
//! through those proxies by the `X-Forwarded-For` client address (any other request is keyed
//! by its peer, whatever headers it sends).
//!
//! Uses `REDIS_URL` when set, else starts a throwaway `redis-server`.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use queue::rate_limit::constant_time_eq;
use queue::rate_limit::KeyBy;
use queue::rate_limit::Limit;
use queue::rate_limit::RateLimitLayer;
use queue::rate_limit::RateLimiter;
use queue::rate_limit::TrustedProxies;
use queue::testing::RedisServer;
use queue::Client;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let addr: SocketAddr = arg("--addr")
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    let admin_key = arg("--admin-key");
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(u) => (None, u),
        Err(_) => {
            let s = RedisServer::start()?;
            let u = s.url().to_string();
            (Some(s), u)
        }
    };
    let client = Client::connect(&url).await?;
    let limiter = RateLimiter::new(client, vec![Limit::parse("10/s")?]);
    let mut layer = RateLimitLayer::new(limiter, KeyBy::ClientIp);
    if let Some(list) = arg("--trusted-proxies") {
        layer = layer.trusted_proxies(TrustedProxies::new(list.split(','))?);
    }
    if let Some(key) = admin_key {
        // A constant-time comparison: `==` stops at the first wrong byte, and how long it
        // took tells a client how much of its guess was right.
        layer = layer.bypass(move |parts| {
            parts
                .headers
                .get("x-api-key")
                .is_some_and(|v| constant_time_eq(v.as_bytes(), key.as_bytes()))
        });
    }
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/health", get(|| async { "ok\n" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving (10 requests per second per client IP)");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
