//! The HTTP side (feature `axum`): a tower layer that rate-limits axum services, and a
//! `tower-sessions` store.

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

/// Computes a request's subject.
pub type SubjectFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// How a request is mapped to the subject whose limits apply.
#[derive(Clone)]
pub enum KeyBy {
    /// The client's IP address (from axum's `ConnectInfo<SocketAddr>`: serve with
    /// `into_make_service_with_connect_info::<SocketAddr>()`).
    ClientIp,
    /// The value of a header (an API key, a user id set by an auth layer); requests without it
    /// share the subject `anonymous`.
    Header(HeaderName),
    /// Anything computed from the request (a user id from an extension...).
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
    fn subject(&self, parts: &Parts) -> String {
        let found = match self {
            KeyBy::ClientIp => parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| format!("ip:{}", c.0.ip())),
            KeyBy::Header(h) => parts
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!("{h}:{v}")),
            KeyBy::Custom(f) => f(parts),
        };
        found.unwrap_or_else(|| "anonymous".to_string())
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
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("key", &self.key)
            .finish()
    }
}

impl RateLimitLayer {
    /// Limits requests by `key` with `limiter`.
    pub fn new(limiter: RateLimiter, key: KeyBy) -> RateLimitLayer {
        RateLimitLayer {
            limiter,
            key,
            bypass: None,
        }
    }

    /// Requests for which `rule` is true skip the limit entirely (nothing is counted).
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
            let subject = layer.key.subject(&parts);
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
