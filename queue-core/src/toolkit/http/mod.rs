//! The HTTP side (feature `axum`): a tower layer that rate-limits axum services, and a
//! `tower-sessions` store.
//!
//! Nothing a client sends reaches a Redis key name raw: header values are hashed, and
//! forwarded-for headers count only from proxies the application trusts.

mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};

use crate::engine::client::Client;
use crate::toolkit::rate_limit::{Decision, RateLimiter};

pub use proxy::{ForwardedHeader, TrustedProxies};

/// Whether `a` and `b` are equal, in a time that depends only on their lengths: for comparing
/// a request's credential (an admin key, a token) with the expected one, where `==` returns at
/// the first differing byte and so tells an attacker, byte by byte, how much of a guess is
/// right.
///
/// Slices of different lengths compare unequal at once (the length of the expected secret is
/// not hidden; compare digests of the secrets to hide it too). Like every constant-time
/// comparison in Rust, this is a best effort against the optimiser (`std::hint::black_box`
/// on every step), not a guarantee from the compiler.
///
/// # Examples
///
/// ```
/// use queue_core::rate_limit::constant_time_eq;
///
/// assert!(constant_time_eq(b"s3cret", b"s3cret"));
/// assert!(!constant_time_eq(b"s3cret", b"s3creT"));
/// assert!(!constant_time_eq(b"s3cret", b"s3cre"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Every byte is looked at whatever the earlier ones were: the differences are folded
    // into one accumulator and tested once, at the end.
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff = std::hint::black_box(diff | (x ^ y));
    }
    std::hint::black_box(diff) == 0
}

/// Hex digits of a header value's SHA-256 kept in its subject: 128 bits, far more than any
/// number of subjects needs to stay apart, and half the key length of the full digest.
const HEADER_HASH_HEX: usize = 32;

/// The subject part of a header value: its SHA-256, truncated, never the value itself (an
/// API key in a key name would be readable by anyone who can list keys, and in every
/// `MONITOR` and slow log).
fn header_hash(value: &[u8]) -> String {
    let mut hash = crate::toolkit::sha256_hex(value);
    hash.truncate(HEADER_HASH_HEX);
    hash
}

/// Computes a request's subject.
pub type SubjectFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// How a request is mapped to the subject whose limits apply.
///
/// Requests for which no subject can be found (no peer address, no such header, an empty
/// value, a custom function answering `None` or an empty string) share the subject
/// `anonymous`.
#[derive(Clone)]
pub enum KeyBy {
    /// The client's IP address, subject `ip:<address>`: the connecting peer (from axum's
    /// `ConnectInfo<SocketAddr>`: serve with `into_make_service_with_connect_info::<SocketAddr>()`),
    /// or, when that peer is one of the layer's [`TrustedProxies`]
    /// ([`RateLimitLayer::trusted_proxies`]), the address it forwarded. Forwarded headers are
    /// ignored by default, since any client can send them.
    ClientIp,
    /// The value of a header (an API key, a user id set by an auth layer), subject
    /// `<header name>:<first 32 hex digits of the value's SHA-256>`: the value itself never
    /// reaches Redis.
    Header(HeaderName),
    /// Anything computed from the request (a user id from an extension...), used as is.
    Custom(SubjectFn),
}

impl std::fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyBy::ClientIp => f.write_str("ClientIp"),
            KeyBy::Header(h) => write!(f, "Header({h})"),
            KeyBy::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl KeyBy {
    fn subject(&self, parts: &Parts, proxies: &TrustedProxies) -> String {
        let found = match self {
            KeyBy::ClientIp => parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| format!("ip:{}", proxies.client_ip(c.0.ip(), &parts.headers))),
            KeyBy::Header(h) => parts
                .headers
                .get(h)
                .map(HeaderValue::as_bytes)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{h}:{}", header_hash(v))),
            KeyBy::Custom(f) => f(parts),
        };
        // An empty subject would be refused by the limiter; it is nobody in particular.
        found
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "anonymous".to_string())
    }
}

/// A predicate on the request: true skips the limit (an admin key...).
type RequestBypass = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// A tower layer applying a [`RateLimiter`] to every request: 429 with `RateLimit-*` and
/// `Retry-After` headers when over the limit, the `RateLimit-*` headers on every response.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    key: KeyBy,
    bypass: Option<RequestBypass>,
    proxies: Arc<TrustedProxies>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("key", &self.key)
            .field("bypass", &self.bypass.is_some())
            .field("proxies", &self.proxies)
            .finish()
    }
}

impl RateLimitLayer {
    /// Limits requests by `key` with `limiter`; no proxy is trusted.
    pub fn new(limiter: RateLimiter, key: KeyBy) -> RateLimitLayer {
        RateLimitLayer {
            limiter,
            key,
            bypass: None,
            proxies: Arc::new(TrustedProxies::none()),
        }
    }

    /// Takes the client address of [`KeyBy::ClientIp`] from the forwarded header that
    /// `proxies` set, for requests that arrive from one of them (behind a load balancer or a
    /// reverse proxy, every request's peer is the proxy). Requests from anywhere else are
    /// keyed by their peer address, whatever headers they carry.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn demo(limiter: queue_core::rate_limit::RateLimiter) -> queue_core::Result<()> {
    /// use queue_core::rate_limit::{KeyBy, RateLimitLayer, TrustedProxies};
    ///
    /// let layer = RateLimitLayer::new(limiter, KeyBy::ClientIp)
    ///     .trusted_proxies(TrustedProxies::new(["10.0.0.0/8", "fd00::/8"])?);
    /// # Ok(()) }
    /// ```
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> RateLimitLayer {
        self.proxies = Arc::new(proxies);
        self
    }

    /// Requests for which `rule` is true skip the limit entirely (nothing is counted).
    ///
    /// A rule that checks a credential should compare it with [`constant_time_eq`], not `==`.
    pub fn bypass(
        mut self,
        rule: impl Fn(&Parts) -> bool + Send + Sync + 'static,
    ) -> RateLimitLayer {
        self.bypass = Some(Arc::new(rule));
        self
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimitService<S> {
    inner: S,
    layer: RateLimitLayer,
}

fn with_headers(mut resp: Response<Body>, d: &Decision) -> Response<Body> {
    for (name, value) in d.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

impl<S> tower::Service<Request<Body>> for RateLimitService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request (the tower idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            if layer.bypass.as_ref().is_some_and(|b| b(&parts)) {
                return inner.call(Request::from_parts(parts, body)).await;
            }
            let subject = layer.key.subject(&parts, &layer.proxies);
            let d = layer.limiter.check(&subject).await;
            if !d.allowed {
                let mut resp = Response::new(Body::from("rate limit exceeded\n"));
                *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                return Ok(with_headers(resp, &d));
            }
            let resp = inner.call(Request::from_parts(parts, body)).await?;
            Ok(with_headers(resp, &d))
        })
    }
}

/// A `tower-sessions` store on Redis. Like [`crate::session::Sessions`], Redis keeps only the SHA-256
/// of a session id, never the id; expiry is the record's own (tower-sessions manages it).
#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    client: Client,
}

impl RedisSessionStore {
    /// A store on `client`'s Redis and namespace.
    pub fn new(client: Client) -> RedisSessionStore {
        RedisSessionStore { client }
    }

    fn key(&self, id: &tower_sessions_core::session::Id) -> String {
        let hash = crate::toolkit::sha256_hex(&id.0.to_le_bytes());
        crate::keys::NamespaceKeys::of_valid(&self.client.config().namespace).tower_session(&hash)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    data: std::collections::HashMap<String, serde_json::Value>,
    expires: i64,
}

fn backend(e: impl std::fmt::Display) -> tower_sessions_core::session_store::Error {
    tower_sessions_core::session_store::Error::Backend(e.to_string())
}

impl RedisSessionStore {
    async fn put(
        &self,
        record: &tower_sessions_core::session::Record,
        only_new: bool,
    ) -> tower_sessions_core::session_store::Result<bool> {
        let expires = record.expiry_date.unix_timestamp();
        let body = serde_json::to_vec(&Stored {
            data: record.data.clone(),
            expires,
        })
        .map_err(|e| tower_sessions_core::session_store::Error::Encode(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&record.id))
            .arg(body)
            .arg("EXAT")
            .arg(expires.max(1));
        if only_new {
            cmd.arg("NX");
        }
        let ok: Option<String> = cmd
            .query_async(&mut self.client.con())
            .await
            .map_err(backend)?;
        Ok(ok.is_some())
    }
}

#[async_trait::async_trait]
impl tower_sessions_core::SessionStore for RedisSessionStore {
    async fn create(
        &self,
        record: &mut tower_sessions_core::session::Record,
    ) -> tower_sessions_core::session_store::Result<()> {
        // A fresh id until one is unused (collisions of 128-bit random ids do not happen; this
        // only makes them harmless).
        for _ in 0..3 {
            if self.put(record, true).await? {
                return Ok(());
            }
            record.id = tower_sessions_core::session::Id::default();
        }
        Err(backend("could not draw an unused session id"))
    }

    async fn save(
        &self,
        record: &tower_sessions_core::session::Record,
    ) -> tower_sessions_core::session_store::Result<()> {
        self.put(record, false).await.map(|_| ())
    }

    async fn load(
        &self,
        id: &tower_sessions_core::session::Id,
    ) -> tower_sessions_core::session_store::Result<Option<tower_sessions_core::session::Record>>
    {
        let body: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(id))
            .query_async(&mut self.client.con())
            .await
            .map_err(backend)?;
        let Some(body) = body else { return Ok(None) };
        let s: Stored = serde_json::from_slice(&body)
            .map_err(|e| tower_sessions_core::session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(s.expires)
            .map_err(|e| tower_sessions_core::session_store::Error::Decode(e.to_string()))?;
        Ok(Some(tower_sessions_core::session::Record {
            id: *id,
            data: s.data,
            expiry_date,
        }))
    }

    async fn delete(
        &self,
        id: &tower_sessions_core::session::Id,
    ) -> tower_sessions_core::session_store::Result<()> {
        redis::cmd("DEL")
            .arg(self.key(id))
            .query_async::<()>(&mut self.client.con())
            .await
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder();
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (mut parts, ()) = req.body(()).expect("request").into_parts();
        let peer: SocketAddr = peer.parse().expect("peer");
        parts.extensions.insert(axum::extract::ConnectInfo(peer));
        parts
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"admin-secret", b"admin-secret"));
        assert!(!constant_time_eq(b"admin-secret", b"admin-secreT"));
        assert!(!constant_time_eq(b"admin-secret", b"Admin-secret"));
        assert!(!constant_time_eq(b"admin-secret", b"admin-secret!"));
        assert!(!constant_time_eq(b"admin-secret", b""));
        // Every single-bit difference at every position is seen.
        let key = [0x5au8; 16];
        for i in 0..key.len() {
            for bit in 0..8 {
                let mut other = key;
                other[i] ^= 1 << bit;
                assert!(!constant_time_eq(&key, &other), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn header_subjects_hold_a_hash_never_the_value() {
        let key = KeyBy::Header(HeaderName::from_static("x-api-key"));
        let none = TrustedProxies::none();
        let a = key.subject(
            &parts("127.0.0.1:1", &[("x-api-key", "sk_live_abc123")]),
            &none,
        );
        let b = key.subject(
            &parts("127.0.0.1:1", &[("x-api-key", "sk_live_abc124")]),
            &none,
        );
        assert!(!a.contains("sk_live"), "{a}");
        assert_eq!(a.len(), "x-api-key:".len() + HEADER_HASH_HEX, "{a}");
        assert!(a.starts_with("x-api-key:"), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            a,
            key.subject(
                &parts("127.0.0.2:1", &[("x-api-key", "sk_live_abc123")]),
                &none
            ),
            "the same value is the same subject from anywhere"
        );
        assert_eq!(
            a,
            format!(
                "x-api-key:{}",
                &crate::toolkit::sha256_hex(b"sk_live_abc123")[..32]
            )
        );
        // Missing and empty values are nobody in particular.
        assert_eq!(key.subject(&parts("127.0.0.1:1", &[]), &none), "anonymous");
        assert_eq!(
            key.subject(&parts("127.0.0.1:1", &[("x-api-key", "")]), &none),
            "anonymous"
        );
    }

    #[test]
    fn custom_subjects_are_used_as_is_but_never_empty() {
        let none = TrustedProxies::none();
        let empty = KeyBy::Custom(Arc::new(|_| Some(String::new())));
        assert_eq!(
            empty.subject(&parts("127.0.0.1:1", &[]), &none),
            "anonymous"
        );
        let user = KeyBy::Custom(Arc::new(|_| Some("user:42".into())));
        assert_eq!(user.subject(&parts("127.0.0.1:1", &[]), &none), "user:42");
    }

    #[test]
    fn client_ip_honours_forwarded_headers_only_from_trusted_proxies() {
        let forged = [("x-forwarded-for", "203.0.113.9")];
        let none = TrustedProxies::none();
        assert_eq!(
            KeyBy::ClientIp.subject(&parts("198.51.100.1:5000", &forged), &none),
            "ip:198.51.100.1",
            "headers are ignored by default"
        );
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).expect("valid");
        assert_eq!(
            KeyBy::ClientIp.subject(&parts("198.51.100.1:5000", &forged), &proxies),
            "ip:198.51.100.1",
            "headers from an untrusted peer are ignored"
        );
        assert_eq!(
            KeyBy::ClientIp.subject(&parts("10.0.0.1:5000", &forged), &proxies),
            "ip:203.0.113.9"
        );
        assert_eq!(
            KeyBy::ClientIp.subject(&parts("[::ffff:10.0.0.1]:5000", &forged), &proxies),
            "ip:203.0.113.9",
            "a dual-stack listener's IPv4-mapped peer is its IPv4 address"
        );
        let (no_peer, ()) = Request::builder().body(()).expect("request").into_parts();
        assert_eq!(KeyBy::ClientIp.subject(&no_peer, &proxies), "anonymous");
    }
}
