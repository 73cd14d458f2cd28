//! A cache for database query results (and anything serialisable): typed cache-aside with
//! named TTL policies and jitter, stampede protection (one loader per key across processes),
//! invalidation by key, tag and namespace version (announced on the event bus so every
//! instance's optional in-process L1 drops its copy), negative caching, warming, metrics. A
//! Redis failure never breaks the application: reads fall back to the loader.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "sqlx")]
pub(crate) mod sqlx;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::engine::client::Client;
use crate::engine::codec::{decode_value, encode_value};
use crate::error::{Error, Result};
use crate::toolkit::events::EventBus;

crate::script::scripts! {
    fn scripts() -> Scripts {
        cache_unlock => ["unlock.lua"],
    }
}

/// A named TTL policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// Name (metrics are kept per policy).
    pub name: String,
    /// How long a value lives.
    pub ttl: Duration,
    /// Each write's TTL is shortened by a random share up to this fraction (0.1 = up to 10%),
    /// so keys written together do not expire together.
    pub jitter: f64,
    /// How long a "not found" is remembered.
    pub negative_ttl: Duration,
    /// Refresh a value in the background when it has less than this left (one caller
    /// refreshes; everyone keeps reading the current value meanwhile).
    pub refresh_ahead: Option<Duration>,
}

impl CachePolicy {
    /// A policy named `name` with `ttl`, 10% jitter and 30 s negative caching.
    pub fn new(name: impl Into<String>, ttl: Duration) -> CachePolicy {
        CachePolicy {
            name: name.into(),
            ttl,
            jitter: 0.1,
            negative_ttl: Duration::from_secs(30),
            refresh_ahead: None,
        }
    }
    /// User sessions: 24 h (the original plan's default).
    pub fn user_sessions() -> CachePolicy {
        CachePolicy::new("user_sessions", Duration::from_secs(24 * 3600))
    }
    /// Query results: 5 min.
    pub fn query_results() -> CachePolicy {
        CachePolicy::new("query_results", Duration::from_secs(300))
    }
    /// API responses: 1 min.
    pub fn api_responses() -> CachePolicy {
        CachePolicy::new("api_responses", Duration::from_secs(60))
    }
    /// Rate-limit counters: 1 min.
    pub fn rate_limits() -> CachePolicy {
        CachePolicy::new("rate_limits", Duration::from_secs(60))
    }
    /// User profiles: 30 min.
    pub fn user_profiles() -> CachePolicy {
        CachePolicy::new("user_profiles", Duration::from_secs(1800))
    }
    /// Overrides the TTL (per call: `CachePolicy::query_results().ttl(..)`).
    pub fn ttl(mut self, ttl: Duration) -> CachePolicy {
        self.ttl = ttl;
        self
    }
    /// Sets the jitter fraction (0 disables it).
    pub fn jitter(mut self, jitter: f64) -> CachePolicy {
        self.jitter = jitter.clamp(0.0, 0.9);
        self
    }
    /// Sets how long "not found" is remembered.
    pub fn negative_ttl(mut self, ttl: Duration) -> CachePolicy {
        self.negative_ttl = ttl;
        self
    }
    /// Refreshes values this long before they expire.
    pub fn refresh_ahead(mut self, before: Duration) -> CachePolicy {
        self.refresh_ahead = Some(before);
        self
    }

    fn jittered(&self, base: Duration) -> Duration {
        let cut = base.mul_f64(self.jitter * rand::random::<f64>());
        (base - cut).max(Duration::from_millis(1))
    }
}

/// A cache key: a namespace (invalidated as a whole by a version bump) and a key within it.
/// [`CacheKey::for_user`] puts the user into the key, which is the way to cache per-user data:
/// a value cached for one user can then never be served to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    namespace: String,
    key: String,
}

impl CacheKey {
    /// `key` in `namespace` (e.g. `products`, `42`).
    pub fn new(namespace: impl Into<String>, key: impl Into<String>) -> CacheKey {
        CacheKey {
            namespace: namespace.into(),
            key: key.into(),
        }
    }

    /// A key private to `user`. The user is escaped ([`escape`](crate::wire::escape)) before
    /// it joins the key, so no user id can reach into another's keys (`("1:x", "y")` and
    /// `("1", "x:y")` are two keys).
    pub fn for_user(
        user: impl std::fmt::Display,
        namespace: impl Into<String>,
        key: impl Into<String>,
    ) -> CacheKey {
        let user = user.to_string();
        CacheKey {
            namespace: namespace.into(),
            key: format!("user:{}:{}", crate::keys::escape(&user), key.into()),
        }
    }

    /// A key derived from a SQL statement and its bound parameters (as the database sees them),
    /// so two queries share a value only if they are the same query.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the parameters cannot be serialised.
    pub fn for_query(
        namespace: impl Into<String>,
        sql: &str,
        params: &impl Serialize,
    ) -> Result<CacheKey> {
        let p = serde_json::to_vec(params).map_err(|e| Error::encode("query parameters", e))?;
        let mut bytes = sql.as_bytes().to_vec();
        bytes.push(0);
        bytes.extend(p);
        Ok(CacheKey::new(
            namespace,
            format!("sql:{}", crate::toolkit::sha256_hex(&bytes)),
        ))
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// SHA-256 of `bytes`, hex: a stable key part for arguments of any size.
pub fn hash_bytes(bytes: &[u8]) -> String {
    crate::toolkit::sha256_hex(bytes)
}

/// What is stored for a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The value (MessagePack), or none for a remembered "not found".
    #[serde(with = "serde_bytes", default)]
    v: Option<Vec<u8>>,
    /// The namespace version it was written under.
    ver: u64,
    /// When it expires, ms (for refresh-ahead).
    exp: i64,
}

/// Counters of one policy.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_us: AtomicU64,
    stampede_waits: AtomicU64,
    invalidations: AtomicU64,
    errors: AtomicU64,
}

/// A policy's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Policy name.
    pub policy: String,
    /// Reads answered from the cache (L1 or Redis), "not found" included.
    pub hits: u64,
    /// Reads that had to load.
    pub misses: u64,
    /// Loader calls.
    pub loads: u64,
    /// Total loader time, microseconds.
    pub load_us: u64,
    /// Callers that waited for another caller's load instead of loading.
    pub stampede_waits: u64,
    /// Keys and namespaces invalidated.
    pub invalidations: u64,
    /// Redis errors (the loader answered instead).
    pub errors: u64,
}

/// An invalidation, as announced on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Invalidation {
    /// Publishing instance (it already dropped its own copies).
    from: u64,
    /// Full keys dropped.
    keys: Vec<String>,
    /// A namespace whose version moved, and the new version.
    namespace: Option<(String, u64)>,
}

const BUS_CHANNEL: &str = "cache.invalidate";

#[derive(Debug, Clone)]
struct L1Entry {
    stored: Stored,
}

struct Inner {
    client: Client,
    keys: crate::keys::CacheKeys,
    instance: u64,
    counters: Mutex<HashMap<String, Arc<Counters>>>,
    flushed: Mutex<HashMap<String, CacheStats>>,
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
    l1: Option<moka::future::Cache<String, L1Entry>>,
    /// Namespace versions this instance knows (kept current by bus messages).
    versions: Mutex<HashMap<String, u64>>,
    lock_ttl: Duration,
}

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("keys", &self.inner.keys)
            .field("l1", &self.inner.l1.is_some())
            .finish()
    }
}

impl Cache {
    /// A cache on `client`'s Redis, without an in-process L1.
    pub fn new(client: Client) -> Cache {
        Cache::build(client, None)
    }

    /// A cache with an in-process L1 in front of Redis holding up to `capacity` values for at
    /// most `ttl`, kept coherent across instances by the invalidation messages on the bus.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] if the invalidation subscription cannot start.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn with_l1(client: Client, capacity: u64, ttl: Duration) -> Result<Cache> {
        let l1 = moka::future::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .build();
        let cache = Cache::build(client.clone(), Some(l1));
        let mut sub = EventBus::new(client)
            .subscribe::<Invalidation>(BUS_CHANNEL)
            .await?;
        let weak = Arc::downgrade(&cache.inner);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Ok(ev) = msg else { continue };
                if ev.payload.from == inner.instance {
                    continue;
                }
                Cache { inner }.apply(&ev.payload).await;
            }
        });
        Ok(cache)
    }

    fn build(client: Client, l1: Option<moka::future::Cache<String, L1Entry>>) -> Cache {
        let keys = crate::keys::CacheKeys::of_valid(&client.config().namespace);
        Cache {
            inner: Arc::new(Inner {
                client,
                keys,
                instance: rand::random(),
                counters: Mutex::default(),
                flushed: Mutex::default(),
                inflight: Mutex::default(),
                l1,
                versions: Mutex::default(),
                lock_ttl: Duration::from_secs(10),
            }),
        }
    }

    async fn apply(&self, inv: &Invalidation) {
        if let Some(l1) = &self.inner.l1 {
            for k in &inv.keys {
                l1.invalidate(k).await;
            }
        }
        if let Some((ns, v)) = &inv.namespace {
            let mut versions = self
                .inner
                .versions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let e = versions.entry(ns.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    fn full(&self, key: &CacheKey) -> String {
        self.inner.keys.entry(&key.namespace, &key.key)
    }
    fn version_key(&self, ns: &str) -> String {
        self.inner.keys.version(ns)
    }
    fn lock_key(&self, key: &CacheKey) -> String {
        self.inner.keys.lock(&key.namespace, &key.key)
    }
    fn tag_key(&self, tag: &str) -> String {
        self.inner.keys.tag(tag)
    }
    fn stats_key(&self) -> String {
        self.inner.keys.stats()
    }

    fn counters(&self, policy: &str) -> Arc<Counters> {
        self.inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(policy.to_string())
            .or_default()
            .clone()
    }

    fn known_version(&self, ns: &str) -> Option<u64> {
        self.inner
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
            .copied()
    }

    /// Reads what is stored for `key` (L1, then Redis with the namespace's current version).
    /// `Ok(None)`: nothing (or something from an older version). `Ok(Some(stored))` with
    /// `stored.v == None`: a remembered "not found".
    async fn read(&self, key: &CacheKey) -> Result<Option<Stored>> {
        let full = self.full(key);
        let now = chrono::Utc::now().timestamp_millis();
        if let (Some(l1), Some(ver)) = (&self.inner.l1, self.known_version(&key.namespace)) {
            if let Some(e) = l1.get(&full).await {
                if e.stored.ver == ver && e.stored.exp > now {
                    return Ok(Some(e.stored));
                }
            }
        }
        let (body, ver): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
            .get(&full)
            .get(self.version_key(&key.namespace))
            .query_async(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        let ver = ver.unwrap_or(0);
        self.inner
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.namespace.clone(), ver);
        let Some(body) = body else { return Ok(None) };
        let stored: Stored = decode_value(&body, "cached value")?;
        if stored.ver != ver {
            return Ok(None);
        }
        if let Some(l1) = &self.inner.l1 {
            l1.insert(
                full,
                L1Entry {
                    stored: stored.clone(),
                },
            )
            .await;
        }
        Ok(Some(stored))
    }

    async fn write(
        &self,
        key: &CacheKey,
        policy: &CachePolicy,
        value: Option<Vec<u8>>,
        tags: &[&str],
    ) -> Result<()> {
        let full = self.full(key);
        let ver = match self.known_version(&key.namespace) {
            Some(v) => v,
            None => {
                let v: Option<u64> = redis::cmd("GET")
                    .arg(self.version_key(&key.namespace))
                    .query_async(&mut self.inner.client.con())
                    .await
                    .map_err(Error::redis(self.inner.client.url()))?;
                v.unwrap_or(0)
            }
        };
        let ttl = if value.is_some() {
            policy.jittered(policy.ttl)
        } else {
            policy.jittered(policy.negative_ttl)
        };
        let stored = Stored {
            v: value,
            ver,
            exp: chrono::Utc::now().timestamp_millis() + ttl.as_millis() as i64,
        };
        let body = encode_value(&stored, "cached value")?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&full)
            .arg(body)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore();
        for t in tags {
            let tk = self.tag_key(t);
            pipe.sadd(&tk, &full).ignore();
            // A tag lives as long as the longest value it names.
            pipe.cmd("PEXPIRE")
                .arg(&tk)
                .arg(policy.ttl.as_millis() as u64)
                .arg("GT")
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&tk)
                .arg(policy.ttl.as_millis() as u64)
                .arg("NX")
                .ignore();
        }
        pipe.query_async::<()>(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        if let Some(l1) = &self.inner.l1 {
            l1.insert(full, L1Entry { stored }).await;
        }
        Ok(())
    }

    /// The cached value of `key`, if any (`Some(None)`: a remembered "not found").
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Decode`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn get<T: DeserializeOwned>(&self, key: &CacheKey) -> Result<Option<Option<T>>> {
        match self.read(key).await? {
            Some(Stored { v: Some(b), .. }) => Ok(Some(Some(decode_value(&b, "cached value")?))),
            Some(Stored { v: None, .. }) => Ok(Some(None)),
            None => Ok(None),
        }
    }

    /// Stores `value` for `key` under `policy`, tagged with `tags`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a write either happened or not).
    pub async fn set<T: Serialize>(
        &self,
        key: &CacheKey,
        policy: &CachePolicy,
        value: &T,
        tags: &[&str],
    ) -> Result<()> {
        self.write(
            key,
            policy,
            Some(encode_value(value, "cached value")?),
            tags,
        )
        .await
    }

    /// Reads many keys in one round trip (values of older namespace versions count as absent).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`], [`Error::Decode`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    pub async fn get_many<T: DeserializeOwned>(&self, keys: &[CacheKey]) -> Result<Vec<Option<T>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.get(self.full(k)).get(self.version_key(&k.namespace));
        }
        let raw: Vec<(Option<Vec<u8>>, Option<u64>)> = pipe
            .query_async(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        raw.into_iter()
            .map(|(body, ver)| {
                let Some(body) = body else { return Ok(None) };
                let s: Stored = decode_value(&body, "cached value")?;
                match s.v {
                    Some(v) if s.ver == ver.unwrap_or(0) => {
                        Ok(Some(decode_value(&v, "cached value")?))
                    }
                    _ => Ok(None),
                }
            })
            .collect()
    }

    /// Stores many values in one round trip.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: some values may have been written.
    pub async fn set_many<T: Serialize>(
        &self,
        entries: &[(CacheKey, T)],
        policy: &CachePolicy,
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        let now = chrono::Utc::now().timestamp_millis();
        for (k, v) in entries {
            let ttl = policy.jittered(policy.ttl);
            let ver = self.known_version(&k.namespace).unwrap_or(0);
            let stored = Stored {
                v: Some(encode_value(v, "cached value")?),
                ver,
                exp: now + ttl.as_millis() as i64,
            };
            pipe.cmd("SET")
                .arg(self.full(k))
                .arg(encode_value(&stored, "cached value")?)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))
    }

    /// The value of `key`, loading it with `loader` on a miss. One caller loads at a time per
    /// key, across processes: others wait for its value (counted as stampede waits). The loader
    /// answers `None` for "not found", which is cached for the policy's negative TTL. If Redis
    /// fails, the loader answers and the failure is counted and logged.
    ///
    /// # Errors
    ///
    /// Only the loader's errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped caller's lock expires by itself.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        key: &CacheKey,
        policy: &CachePolicy,
        loader: F,
    ) -> std::result::Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>>,
    {
        let c = self.counters(&policy.name);
        let mut loader = Some(loader);
        for _ in 0..3 {
            match self.read(key).await {
                Ok(Some(stored)) => {
                    c.hits.fetch_add(1, Ordering::Relaxed);
                    if self.due_for_refresh(policy, &stored) {
                        // One caller (whoever takes the lock without waiting) reloads now; the
                        // others keep the current value until it is replaced.
                        if let Ok(Some(guard)) = self.try_lead(key).await {
                            if let Some(load) = loader.take() {
                                let t0 = Instant::now();
                                let value = load().await;
                                c.loads.fetch_add(1, Ordering::Relaxed);
                                c.load_us
                                    .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                                if let Ok(v) = &value {
                                    let bytes = v
                                        .as_ref()
                                        .and_then(|v| encode_value(v, "cached value").ok());
                                    if let Err(e) = self.write(key, policy, bytes, &[]).await {
                                        self.failed(&c, key, &e);
                                    }
                                }
                                guard.release().await;
                                return value;
                            }
                            guard.release().await;
                        }
                    }
                    match stored.v {
                        Some(b) => match decode_value(&b, "cached value") {
                            Ok(v) => return Ok(Some(v)),
                            Err(e) => self.failed(&c, key, &e),
                        },
                        None => return Ok(None),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed(&c, key, &e);
                    break;
                }
            }
            // A miss: lead the load, or wait for whoever leads it.
            match self.lead_or_wait(key).await {
                Ok(Some(guard)) => {
                    c.misses.fetch_add(1, Ordering::Relaxed);
                    let load = loader.take();
                    let Some(load) = load else { break };
                    let t0 = Instant::now();
                    let value = load().await;
                    c.loads.fetch_add(1, Ordering::Relaxed);
                    c.load_us
                        .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if let Ok(v) = &value {
                        let bytes = match v {
                            Some(v) => encode_value(v, "cached value").ok(),
                            None => None,
                        };
                        if v.is_none() || bytes.is_some() {
                            if let Err(e) = self.write(key, policy, bytes, &[]).await {
                                self.failed(&c, key, &e);
                            }
                        }
                    }
                    guard.release().await;
                    return value;
                }
                Ok(None) => {
                    c.stampede_waits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.failed(&c, key, &e);
                    break;
                }
            }
        }
        // Redis is failing (or three waits ended without a value): the loader answers.
        match loader.take() {
            Some(load) => {
                c.loads.fetch_add(1, Ordering::Relaxed);
                load().await
            }
            None => Ok(None),
        }
    }

    fn failed(&self, c: &Counters, key: &CacheKey, e: &Error) {
        c.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key = %key.key, error = %e, "cache unavailable; loading directly");
    }

    /// Becomes the loader of `key` (returns a guard) or waits until the current loader, here
    /// or in another process, is done (returns `None`; the caller reads again).
    async fn lead_or_wait(&self, key: &CacheKey) -> Result<Option<FillGuard>> {
        let full = self.full(key);
        // In-process: one leader per key; the others wait on its notification.
        let waiter = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match inflight.get(&full) {
                Some(n) => Some(n.clone()),
                None => {
                    inflight.insert(full.clone(), Arc::new(Notify::new()));
                    None
                }
            }
        };
        if let Some(n) = waiter {
            let notified = n.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check: the leader may have finished between the map lookup and `enable`.
            let still = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&full);
            if still {
                let _ = tokio::time::timeout(self.inner.lock_ttl, notified).await;
            }
            return Ok(None);
        }
        let local = LocalLeader {
            cache: self.clone(),
            full: full.clone(),
        };
        // Across processes: a short Redis lock.
        let (lock, token) = self.lock_names(key);
        let deadline = Instant::now() + self.inner.lock_ttl;
        loop {
            if self.try_lock(&lock, &token).await? {
                // Someone may have filled it between our miss and our lock.
                if self.read(key).await?.is_some() {
                    self.unlock(&lock, &token).await;
                    drop(local);
                    return Ok(None);
                }
                return Ok(Some(FillGuard {
                    cache: self.clone(),
                    lock,
                    token,
                    _local: local,
                }));
            }
            // Another process loads: wait for its value (a short poll: the wait is bounded by
            // the lock's TTL, after which its holder is presumed dead and we take over).
            tokio::time::sleep(Duration::from_millis(5)).await;
            if self.read(key).await?.is_some() || Instant::now() > deadline {
                drop(local);
                return Ok(None);
            }
        }
    }

    async fn unlock(&self, lock: &str, token: &str) {
        let mut call = scripts().cache_unlock.call();
        call.key(lock.to_string()).arg(token);
        let _ = call
            .invoke::<i64, _>(&mut self.inner.client.con(), self.inner.client.url())
            .await;
    }

    fn due_for_refresh(&self, policy: &CachePolicy, stored: &Stored) -> bool {
        policy.refresh_ahead.is_some_and(|before| {
            stored.exp - chrono::Utc::now().timestamp_millis() <= before.as_millis() as i64
        })
    }

    /// Takes the key's fill lock if it is free, without waiting.
    async fn try_lead(&self, key: &CacheKey) -> Result<Option<FillGuard>> {
        let full = self.full(key);
        {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if inflight.contains_key(&full) {
                return Ok(None);
            }
            inflight.insert(full.clone(), Arc::new(Notify::new()));
        }
        let local = LocalLeader {
            cache: self.clone(),
            full,
        };
        let (lock, token) = self.lock_names(key);
        if !self.try_lock(&lock, &token).await? {
            return Ok(None);
        }
        Ok(Some(FillGuard {
            cache: self.clone(),
            lock,
            token,
            _local: local,
        }))
    }

    /// The key's fill lock and a token unique to this attempt.
    fn lock_names(&self, key: &CacheKey) -> (String, String) {
        (
            self.lock_key(key),
            format!("{}:{}", self.inner.instance, rand::random::<u64>()),
        )
    }

    /// Takes the fill lock if it is free (`SET NX PX`, expiring after the lock TTL so a dead
    /// holder never blocks the key for longer).
    async fn try_lock(&self, lock: &str, token: &str) -> Result<bool> {
        let got: Option<String> = redis::cmd("SET")
            .arg(lock)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(self.inner.lock_ttl.as_millis() as u64)
            .query_async(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        Ok(got.is_some())
    }

    /// Deletes `keys` everywhere (Redis and every instance's L1).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn delete(&self, keys: &[CacheKey]) -> Result<()> {
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        if full.is_empty() {
            return Ok(());
        }
        redis::cmd("DEL")
            .arg(&full)
            .query_async::<()>(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        self.announce(Invalidation {
            from: self.inner.instance,
            keys: full,
            namespace: None,
        })
        .await
    }

    /// Deletes every value tagged `tag` (e.g. `user:42`, `table:orders`).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        let tk = self.tag_key(tag);
        let keys: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&tk)
            .query_async(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        // The tag may still name values already deleted by key or expired: count what DEL
        // actually removed.
        let mut n = 0;
        if !keys.is_empty() {
            let (removed,): (u64,) = redis::pipe()
                .del(&keys)
                .srem(&tk, &keys)
                .ignore()
                .query_async(&mut self.inner.client.con())
                .await
                .map_err(Error::redis(self.inner.client.url()))?;
            n = removed;
        }
        self.announce(Invalidation {
            from: self.inner.instance,
            keys,
            namespace: None,
        })
        .await?;
        Ok(n)
    }

    /// Invalidates a whole namespace at once by moving its version: every value written under
    /// the old version is ignored from now on (and expires by itself).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn bump_namespace(&self, namespace: &str) -> Result<u64> {
        let ns = namespace.to_string();
        let v: u64 = redis::cmd("INCR")
            .arg(self.version_key(&ns))
            .query_async(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        self.inner
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.clone(), v);
        self.announce(Invalidation {
            from: self.inner.instance,
            keys: Vec::new(),
            namespace: Some((ns, v)),
        })
        .await?;
        Ok(v)
    }

    async fn announce(&self, inv: Invalidation) -> Result<()> {
        self.apply(&inv).await;
        let n = inv.keys.len() as u64 + u64::from(inv.namespace.is_some());
        self.counters("invalidations")
            .invalidations
            .fetch_add(n, Ordering::Relaxed);
        EventBus::new(self.inner.client.clone())
            .publish(BUS_CHANNEL, &inv)
            .await
            .map(|_| ())
    }

    /// Loads and stores values for `keys` in pipelined batches of 500 (cache warming; can run
    /// as a job). Returns how many values were stored.
    ///
    /// # Errors
    ///
    /// The loader's error (as [`Error::Redis`] text), or [`Error::Unreachable`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe.
    pub async fn warm<T, F, Fut>(
        &self,
        keys: Vec<CacheKey>,
        policy: &CachePolicy,
        loader: F,
    ) -> Result<u64>
    where
        T: Serialize,
        F: Fn(Vec<CacheKey>) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<(CacheKey, T)>, String>>,
    {
        let mut stored = 0;
        for chunk in keys.chunks(500) {
            let values = loader(chunk.to_vec()).await.map_err(Error::Loader)?;
            stored += values.len() as u64;
            self.set_many(&values, policy).await?;
        }
        Ok(stored)
    }

    /// This process's figures per policy since it started.
    pub fn stats(&self) -> Vec<CacheStats> {
        let counters = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<CacheStats> = counters
            .iter()
            .map(|(p, c)| CacheStats {
                policy: p.clone(),
                hits: c.hits.load(Ordering::Relaxed),
                misses: c.misses.load(Ordering::Relaxed),
                loads: c.loads.load(Ordering::Relaxed),
                load_us: c.load_us.load(Ordering::Relaxed),
                stampede_waits: c.stampede_waits.load(Ordering::Relaxed),
                invalidations: c.invalidations.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.policy.cmp(&b.policy));
        out
    }

    /// Adds this process's figures since the last flush to the shared ones in Redis (read by
    /// `queue cache stats`).
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] (the figures are kept for the next flush).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: figures are marked flushed only after Redis took them.
    pub async fn flush_stats(&self) -> Result<()> {
        let now = self.stats();
        let before = self
            .inner
            .flushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let key = self.stats_key();
        let mut pipe = redis::pipe();
        for s in &now {
            let b = before.get(&s.policy).cloned().unwrap_or_default();
            for (field, n) in [
                ("hits", s.hits - b.hits),
                ("misses", s.misses - b.misses),
                ("loads", s.loads - b.loads),
                ("load_us", s.load_us - b.load_us),
                ("stampede_waits", s.stampede_waits - b.stampede_waits),
                ("invalidations", s.invalidations - b.invalidations),
                ("errors", s.errors - b.errors),
            ] {
                if n > 0 {
                    pipe.hincr(&key, format!("{}:{field}", s.policy), n)
                        .ignore();
                }
            }
        }
        pipe.query_async::<()>(&mut self.inner.client.con())
            .await
            .map_err(Error::redis(self.inner.client.url()))?;
        *self.inner.flushed.lock().unwrap_or_else(|p| p.into_inner()) =
            now.into_iter().map(|s| (s.policy.clone(), s)).collect();
        Ok(())
    }
}

/// The shared cache figures per policy (what `queue cache stats` shows).
///
/// # Errors
///
/// [`Error::Unreachable`].
///
/// # Cancel safety
///
/// Cancel safe (read only).
pub async fn stats(client: &Client) -> Result<Vec<CacheStats>> {
    let key = crate::keys::CacheKeys::of_valid(&client.config().namespace).stats();
    let all: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(&mut client.con())
        .await
        .map_err(Error::redis(client.url()))?;
    let mut by: std::collections::BTreeMap<String, CacheStats> = Default::default();
    for (field, n) in all {
        let Some((policy, what)) = field.rsplit_once(':') else {
            continue;
        };
        let s = by.entry(policy.to_string()).or_insert_with(|| CacheStats {
            policy: policy.to_string(),
            ..Default::default()
        });
        match what {
            "hits" => s.hits += n,
            "misses" => s.misses += n,
            "loads" => s.loads += n,
            "load_us" => s.load_us += n,
            "stampede_waits" => s.stampede_waits += n,
            "invalidations" => s.invalidations += n,
            "errors" => s.errors += n,
            _ => {}
        }
    }
    Ok(by.into_values().collect())
}

/// Removes this process's in-flight marker for a key when its leader finishes (or is dropped),
/// waking the local waiters.
struct LocalLeader {
    cache: Cache,
    full: String,
}

impl Drop for LocalLeader {
    fn drop(&mut self) {
        let n = self
            .cache
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.full);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

/// Held while loading a key: releases the Redis lock and wakes local waiters.
struct FillGuard {
    cache: Cache,
    lock: String,
    token: String,
    _local: LocalLeader,
}

impl FillGuard {
    async fn release(self) {
        self.cache.unlock(&self.lock, &self.token).await;
    }
}

#[cfg(test)]
mod tests {
    use super::CacheKey;

    #[test]
    fn a_user_cannot_reach_into_another_users_keys() {
        let a = CacheKey::for_user("1:x", "profiles", "y");
        let b = CacheKey::for_user("1", "profiles", "x:y");
        assert_ne!(a.key, b.key);
        assert_eq!(a.namespace, b.namespace);
    }
}
