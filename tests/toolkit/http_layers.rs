//! The axum rate-limit layer and the tower-sessions store over real HTTP.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use common::Env;
use queue::rate_limit::constant_time_eq;
use queue::rate_limit::KeyBy;
use queue::rate_limit::Limit;
use queue::rate_limit::RateLimitLayer;
use queue::rate_limit::RateLimiter;
use queue::rate_limit::TrustedProxies;
use queue::session::RedisSessionStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection from `source` (a loopback address).
async fn get_from(addr: SocketAddr, source: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source");
    let mut stream = socket.connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

#[tokio::test]
async fn per_ip_limit_with_headers_429_and_admin_bypass() {
    let env = Env::start().await;
    let limiter = RateLimiter::new(
        env.client.clone(),
        vec![Limit::parse("10/10s").expect("limit")],
    );
    let layer = RateLimitLayer::new(limiter, KeyBy::ClientIp).bypass(|p| {
        p.headers
            .get("x-api-key")
            .is_some_and(|v| constant_time_eq(v.as_bytes(), b"admin-secret"))
    });
    let addr = serve(
        Router::new()
            .route("/", get(|| async { "hello" }))
            .layer(layer),
    )
    .await;

    for i in 0..10u32 {
        let r = get_from(addr, "127.0.0.1", "/", &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, "hello");
        assert_eq!(r.headers["ratelimit-limit"], "10");
        assert_eq!(r.headers["ratelimit-remaining"], (9 - i).to_string());
    }
    let r = get_from(addr, "127.0.0.1", "/", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    let retry: u64 = r.headers["retry-after"].parse().expect("retry-after");
    assert!((1..=10).contains(&retry), "{retry}");

    // Another client IP has its own budget.
    let other = get_from(addr, "127.0.0.2", "/", &[]).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.headers["ratelimit-remaining"], "9");

    // The admin key skips the limit entirely (nothing counted, no headers).
    for _ in 0..3 {
        let r = get_from(addr, "127.0.0.1", "/", &[("x-api-key", "admin-secret")]).await;
        assert_eq!(r.status, 200);
        assert!(!r.headers.contains_key("ratelimit-limit"));
    }
    let wrong = get_from(addr, "127.0.0.1", "/", &[("x-api-key", "guess")]).await;
    assert_eq!(wrong.status, 429, "a wrong key is just another request");
}

/// A server whose one route allows 2 requests per 10 s per value of `header`.
async fn two_per_ten_seconds_by_header(env: &Env, header: &'static str) -> SocketAddr {
    let limiter = RateLimiter::new(
        env.client.clone(),
        vec![Limit::parse("2/10s").expect("limit")],
    );
    let layer = RateLimitLayer::new(limiter, KeyBy::Header(http_header(header)));
    serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(layer),
    )
    .await
}

#[tokio::test]
async fn per_user_limits_by_header() {
    let env = Env::start().await;
    let addr = two_per_ten_seconds_by_header(&env, "x-user-id").await;
    for _ in 0..2 {
        assert_eq!(
            get_from(addr, "127.0.0.1", "/", &[("x-user-id", "alice")])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get_from(addr, "127.0.0.1", "/", &[("x-user-id", "alice")])
            .await
            .status,
        429
    );
    assert_eq!(
        get_from(addr, "127.0.0.1", "/", &[("x-user-id", "bob")])
            .await
            .status,
        200,
        "bob has his own budget"
    );
}

#[tokio::test]
async fn header_values_reach_redis_only_hashed() {
    let env = Env::start().await;
    let addr = two_per_ten_seconds_by_header(&env, "x-api-key").await;
    let key = "sk_live_4f9c2a7e";
    for expected in [200, 200, 429] {
        let r = get_from(addr, "127.0.0.1", "/", &[("x-api-key", key)]).await;
        assert_eq!(r.status, expected);
    }
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .expect("keys");
    assert!(
        keys.iter().any(|k| k.contains(":rl:{x-api-key%3A")),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| !k.contains("sk_live")), "{keys:?}");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let env = Env::start().await;
    let limiter = RateLimiter::new(
        env.client.clone(),
        vec![Limit::parse("2/10s").expect("limit")],
    );
    // 127.0.0.2 plays the reverse proxy; 127.0.0.1 is a client that connects directly.
    let layer = RateLimitLayer::new(limiter, KeyBy::ClientIp)
        .trusted_proxies(TrustedProxies::new(["127.0.0.2/32"]).expect("proxies"));
    let addr = serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(layer),
    )
    .await;

    // A direct client cannot buy a fresh budget by forging the header.
    for (i, expected) in [200, 200, 429, 429].into_iter().enumerate() {
        let forged = format!("198.51.100.{i}");
        let r = get_from(addr, "127.0.0.1", "/", &[("x-forwarded-for", &forged)]).await;
        assert_eq!(r.status, expected, "forged request {i}");
    }

    // Through the proxy, each forwarded client has its own budget; entries a client put left
    // of the proxy's own are not believed.
    for expected in [200, 200, 429] {
        let r = get_from(
            addr,
            "127.0.0.2",
            "/",
            &[("x-forwarded-for", "198.51.100.77, 203.0.113.1")],
        )
        .await;
        assert_eq!(r.status, expected, "203.0.113.1 through the proxy");
    }
    let other = get_from(
        addr,
        "127.0.0.2",
        "/",
        &[("x-forwarded-for", "203.0.113.2")],
    )
    .await;
    assert_eq!(other.status, 200, "another client behind the proxy");
    assert_eq!(other.headers["ratelimit-remaining"], "1");

    // The proxy's own requests, forwarding nothing, are its own subject.
    let bare = get_from(addr, "127.0.0.2", "/", &[]).await;
    assert_eq!(bare.status, 200);
    assert_eq!(bare.headers["ratelimit-remaining"], "1");
}

fn http_header(name: &'static str) -> axum::http::HeaderName {
    axum::http::HeaderName::from_static(name)
}

async fn visits(session: tower_sessions::Session) -> String {
    let n: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    session.insert("visits", n).await.expect("insert");
    n.to_string()
}

#[tokio::test]
async fn tower_sessions_on_redis_with_cookies_and_no_fixation() {
    let env = Env::start().await;
    let store = RedisSessionStore::new(env.client.clone());
    let layer = tower_sessions::SessionManagerLayer::new(store).with_secure(false);
    let addr = serve(Router::new().route("/", get(visits)).layer(layer)).await;

    let first = get_from(addr, "127.0.0.1", "/", &[]).await;
    assert_eq!(first.body, "1");
    let cookie = first.headers["set-cookie"]
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    let second = get_from(addr, "127.0.0.1", "/", &[("cookie", &cookie)]).await;
    assert_eq!(
        second.body, "2",
        "the session lives in Redis between requests"
    );

    // A session id the server never issued is not adopted: a new session starts.
    let forged = get_from(
        addr,
        "127.0.0.1",
        "/",
        &[("cookie", "id=AAAAAAAAAAAAAAAAAAAAAA")],
    )
    .await;
    assert_eq!(forged.body, "1");
    let issued = forged.headers["set-cookie"]
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    assert_ne!(issued, "id=AAAAAAAAAAAAAAAAAAAAAA");

    // Redis holds hashes of ids only.
    let value = cookie
        .split_once('=')
        .map(|(_, v)| v.to_string())
        .expect("value");
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .expect("keys");
    assert!(keys.iter().all(|k| !k.contains(&value)), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("queue:session:tower:")));
}
