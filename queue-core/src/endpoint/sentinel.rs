//! The primary a set of Redis Sentinels names, found again after every failover.
//!
//! A Sentinel URL lists the Sentinels and the master's name:
//!
//! ```text
//! redis+sentinel://[user:password@]host[:port][,host[:port]...]/master-name[/db]
//!     [?sentinel_user=U&sentinel_password=P]
//! ```
//!
//! The credentials and the database are the data servers' (the primary's); the Sentinels take
//! theirs from the query (most deployments leave them open). `rediss+sentinel://` speaks TLS to
//! both, with the client's TLS files. The default Sentinel port is 26379.
//!
//! Following the Sentinel client guidelines, the primary's address is asked of the Sentinels in
//! turn (the one that answered moves to the front), and the server found there must say it is
//! the primary (`ROLE`) before it is used: a Sentinel that has not seen a failover yet names the
//! old one. The address is kept until a call fails in a way a failover explains (the connection
//! refused, dropped or timed out, `READONLY`, `MASTERDOWN`); the next call asks again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;

use super::{host_port, parse_host, scheme, server_url, shown, strip_scheme};
use crate::engine::client::{open_redis, ClientConfig};
use crate::error::{Error, ErrorKind, Result};

/// The default port of a Sentinel.
pub const SENTINEL_PORT: u16 = 26379;

/// The most Sentinels a URL may list.
const MAX_SENTINELS: usize = 64;

/// How long a failed search for the primary is answered from memory: callers retrying in a
/// burst (every worker slot at once) do not each walk the Sentinels.
const NEGATIVE_TTL: Duration = Duration::from_millis(200);

/// How often the connection that follows the Sentinels' announcements is checked.
const WATCH_PING: Duration = Duration::from_secs(5);

/// A primary found through Sentinels, and the task that follows their announcements.
pub(crate) struct Sentinel {
    state: std::sync::Arc<State>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("master", &self.state.url.master)
            .field("sentinels", &self.state.url.sentinels)
            .finish_non_exhaustive()
    }
}

impl Sentinel {
    /// Follows the primary `url` names; a task follows the Sentinels' announcements when
    /// opened inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for unreadable TLS files.
    pub(crate) fn open(url: SentinelUrl, config: &ClientConfig) -> Result<Sentinel> {
        // The TLS files are checked now, not at the first failover.
        let probe = ClientConfig {
            url: url.node_url("127.0.0.1", 6379),
            ..config.clone()
        };
        open_redis(&probe)?;
        let state = std::sync::Arc::new(State {
            url,
            config: config.clone(),
            order: Mutex::new(Vec::new()),
            current: Mutex::new(Current::Unknown),
            resolving: tokio::sync::Mutex::new(()),
            epoch: AtomicU64::new(1),
            moved: tokio::sync::watch::channel(1).0,
        });
        // Outside a Tokio runtime nothing follows the announcements; failures a failover
        // explains still move the client.
        let watcher = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(watch(std::sync::Arc::downgrade(&state))));
        Ok(Sentinel { state, watcher })
    }

    /// The primary, and the epoch it was found in.
    ///
    /// # Errors
    ///
    /// A connection error when no Sentinel names a primary that answers as one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn client(&self) -> redis::RedisResult<(u64, redis::Client)> {
        self.state.client().await
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.state.epoch.load(Ordering::Acquire)
    }

    /// Resolves when `epoch` has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn moved(&self, epoch: u64) {
        let mut rx = self.state.moved.subscribe();
        // Only an error (the sender gone with the endpoint) ends the wait otherwise.
        let _ = rx.wait_for(|&now| now != epoch).await;
    }

    /// Ends `epoch`, because of `why`: the primary is looked up again.
    pub(crate) fn end_epoch(&self, epoch: u64, why: &str) {
        self.state.end_epoch(epoch, why);
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

enum Current {
    Unknown,
    /// The primary found in an epoch, and its address.
    Known(u64, Box<redis::Client>, String),
    /// The last search failed, at this instant, this way.
    Failed(Instant, Failure),
}

struct State {
    url: SentinelUrl,
    config: ClientConfig,
    /// Indexes into `url.sentinels`, the one that last answered first.
    order: Mutex<Vec<usize>>,
    current: Mutex<Current>,
    /// One search at a time; the others wait for its answer.
    resolving: tokio::sync::Mutex<()>,
    epoch: AtomicU64,
    /// The epoch, for those who wait for it to end.
    moved: tokio::sync::watch::Sender<u64>,
}

impl State {
    fn cached(&self) -> Option<redis::RedisResult<(u64, redis::Client)>> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Current::Known(e, c, _) if *e == epoch => Some(Ok((*e, (**c).clone()))),
            Current::Failed(at, failure) if at.elapsed() < NEGATIVE_TTL => {
                Some(Err(failure.error()))
            }
            _ => None,
        }
    }

    async fn client(&self) -> redis::RedisResult<(u64, redis::Client)> {
        if let Some(known) = self.cached() {
            return known;
        }
        let _one = self.resolving.lock().await;
        if let Some(known) = self.cached() {
            return known;
        }
        // The answer belongs to the epoch it was asked in. An announcement that arrives
        // meanwhile ends that epoch and may make the answer stale (a requested failover
        // leaves the old primary taking writes for seconds): then it is asked again.
        let mut tries = 0;
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            let found = self.find_primary().await;
            tries += 1;
            if self.epoch.load(Ordering::Acquire) != epoch && tries < 3 {
                continue;
            }
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            return match found {
                Ok((addr, client)) => {
                    tracing::info!(master = %self.url.master, primary = %addr, "Sentinel: connecting to the primary");
                    *current = Current::Known(epoch, Box::new(client.clone()), addr);
                    Ok((epoch, client))
                }
                Err(failure) => {
                    let e = failure.error();
                    *current = Current::Failed(Instant::now(), failure);
                    Err(e)
                }
            };
        }
    }

    /// The address of the primary of the current epoch, when known.
    fn known_address(&self) -> Option<String> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Current::Known(e, _, addr) if *e == self.epoch.load(Ordering::Acquire) => {
                Some(addr.clone())
            }
            _ => None,
        }
    }

    /// Ends epoch `epoch` (if it is still the current one): connections opened in it are
    /// replaced, and the primary is looked up again.
    fn end_epoch(&self, epoch: u64, why: &str) {
        if self
            .epoch
            .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.moved.send_replace(epoch + 1);
            tracing::warn!(master = %self.url.master, reason = %why, "Sentinel: the primary may have moved; asking the Sentinels again");
        }
    }

    /// Asks each Sentinel in turn for the primary's address, and checks the server there.
    async fn find_primary(&self) -> std::result::Result<(String, redis::Client), Failure> {
        let mut failures = Vec::new();
        let mut fatal = None;
        // Sentinels that agree on a dead address are not each made to wait a connect timeout.
        let mut dead = Vec::new();
        // However many Sentinels are listed or frozen, a lookup ends in bounded time.
        let deadline = Instant::now() + self.config.connect_timeout * 3;
        let order = self.order();
        let mut asked = 0;
        for &i in &order {
            if Instant::now() > deadline {
                break;
            }
            asked += 1;
            let (host, port) = &self.url.sentinels[i];
            match self.ask(host, *port, &mut dead).await {
                Ok(found) => {
                    self.prefer(i);
                    return Ok(found);
                }
                Err((why, kind)) => {
                    fatal = fatal.or(kind);
                    failures.push(format!("{}: {why}", host_port(host, *port)));
                }
            }
        }
        let shown = failures.len().min(5);
        let mut why = format!(
            "no Sentinel names a reachable primary for '{}' ({}",
            self.url.master,
            failures[..shown].join("; ")
        );
        if failures.len() > shown {
            why.push_str(&format!("; {} more", failures.len() - shown));
        }
        if asked < order.len() {
            why.push_str(&format!(
                "; {} not asked: the lookup ran out of time",
                order.len() - asked
            ));
        }
        why.push(')');
        Err(Failure { why, fatal })
    }

    /// The Sentinels to ask, in order.
    fn order(&self) -> Vec<usize> {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        if order.len() != self.url.sentinels.len() {
            *order = (0..self.url.sentinels.len()).collect();
        }
        order.clone()
    }

    /// Moves Sentinel `i` to the front: it answered.
    fn prefer(&self, i: usize) {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.retain(|&j| j != i);
        order.insert(0, i);
    }

    fn sentinel_client(&self, host: &str, port: u16) -> std::result::Result<redis::Client, String> {
        open_redis(&ClientConfig {
            url: self.url.sentinel_url(host, port),
            ..self.config.clone()
        })
        .map_err(|e| e.to_string())
    }

    fn timeouts(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.config.response_timeout))
            .set_connection_timeout(Some(self.config.connect_timeout))
    }

    /// Asks one Sentinel. A failure says why, and, when no retry can help (wrong
    /// credentials, an unknown master, a server that is no Sentinel), the error kind to report.
    async fn ask(
        &self,
        host: &str,
        port: u16,
        dead: &mut Vec<String>,
    ) -> std::result::Result<(String, redis::Client), (String, Option<redis::ErrorKind>)> {
        let retry = |why: String| (why, None);
        let kind_of =
            |e: &redis::RedisError| (!ErrorKind::of_redis(e).is_retryable()).then(|| e.kind());
        let mut con = self
            .sentinel_client(host, port)
            .map_err(|why| (why, Some(redis::ErrorKind::InvalidClientConfig)))?
            .get_multiplexed_async_connection_with_config(&self.timeouts())
            .await
            .map_err(|e| (e.to_string(), kind_of(&e)))?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.url.master)
            .query_async(&mut con)
            .await
            .map_err(|e| (format!("is not a Sentinel: {e}"), kind_of(&e)))?;
        let (ip, port) = addr.ok_or_else(|| {
            (
                format!("knows no master named '{}'", self.url.master),
                Some(redis::ErrorKind::InvalidClientConfig),
            )
        })?;
        let node = open_redis(&ClientConfig {
            url: self.url.node_url(&ip, port),
            ..self.config.clone()
        })
        .map_err(|e| (e.to_string(), Some(redis::ErrorKind::InvalidClientConfig)))?;
        let addr = host_port(&ip, port);
        if dead.contains(&addr) {
            return Err(retry(format!("names {addr}, which did not answer")));
        }
        let mut con = match node
            .get_multiplexed_async_connection_with_config(&self.timeouts())
            .await
        {
            Ok(con) => con,
            Err(e) => {
                dead.push(addr.clone());
                return Err((format!("names {addr}, which refuses us: {e}"), kind_of(&e)));
            }
        };
        let role: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query_async(&mut con).await;
        match role {
            Ok(redis::Value::Array(parts)) => match parts.first() {
                Some(redis::Value::BulkString(r)) if r.as_slice() == b"master" => Ok((addr, node)),
                _ => Err(retry(format!(
                    "names {addr}, which is not a primary (yet): a failover is under way"
                ))),
            },
            Ok(other) => Err(retry(format!(
                "names {addr}, whose ROLE reply is {other:?}"
            ))),
            // A least-privilege user may not run ROLE: the Sentinel's word is taken.
            Err(e) if ErrorKind::of_redis(&e) == ErrorKind::Permission => Ok((addr, node)),
            Err(e) => Err(retry(format!("names {addr}, which fails ROLE: {e}"))),
        }
    }
}

/// Follows the Sentinels' `+switch-master` announcements, on one Sentinel at a time, for as
/// long as `state` lives: each for this master ends the epoch, so the clients move to the new
/// primary at once. Without this, a client would keep writing to an old primary that a
/// requested failover left running (Sentinel turns it into a replica only seconds later, and
/// what it took meanwhile is lost).
async fn watch(state: std::sync::Weak<State>) {
    let mut pause = Duration::from_millis(100);
    let mut subscribed_before = false;
    loop {
        let Some(s) = state.upgrade() else { return };
        let order = s.order();
        let master = s.url.master.clone();
        let mut lost = None;
        for i in order {
            let (host, port) = s.url.sentinels[i].clone();
            let Ok(client) = s.sentinel_client(&host, port) else {
                continue;
            };
            let connect = tokio::time::timeout(s.config.connect_timeout, async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe("+switch-master").await?;
                Ok::<_, redis::RedisError>(ps)
            });
            let Ok(Ok(ps)) = connect.await else {
                continue;
            };
            if subscribed_before {
                // Announcements may have been missed while no Sentinel was followed: if the
                // primary is not the one the clients use, their epoch ends.
                let epoch = s.epoch.load(Ordering::Acquire);
                let known = s.known_address();
                let mut dead = Vec::new();
                if let (Some(known), Ok((now, _))) = (known, s.ask(&host, port, &mut dead).await) {
                    if now != known {
                        s.end_epoch(epoch, &format!("the primary is {now} now, not {known}"));
                    }
                }
            }
            subscribed_before = true;
            pause = Duration::from_millis(100);
            let timeout = s.config.response_timeout;
            drop(s);
            let (mut sink, mut messages) = ps.split();
            use futures_util::StreamExt;
            loop {
                let msg = tokio::select! {
                    msg = messages.next() => msg,
                    // A PING now and then finds a half-open connection, which would
                    // otherwise stop the announcements without a word.
                    () = tokio::time::sleep(WATCH_PING) => {
                        match tokio::time::timeout(timeout, sink.ping::<String>()).await {
                            Ok(Ok(_)) => continue,
                            _ => None,
                        }
                    }
                };
                let Some(msg) = msg else { break };
                let payload: String = msg.get_payload().unwrap_or_default();
                // `<master> <old ip> <old port> <new ip> <new port>`
                if payload.split(' ').next() == Some(master.as_str()) {
                    let Some(s) = state.upgrade() else { return };
                    s.end_epoch(
                        s.epoch.load(Ordering::Acquire),
                        &format!("+switch-master {payload}"),
                    );
                }
            }
            lost = Some(host_port(&host, port));
            break;
        }
        if let Some(from) = lost {
            tracing::debug!(sentinel = %from, "Sentinel announcements lost; following another Sentinel");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Why a lookup failed, and the error kind to report when no retry can help.
struct Failure {
    why: String,
    fatal: Option<redis::ErrorKind>,
}

impl Failure {
    fn error(&self) -> redis::RedisError {
        match self.fatal {
            Some(kind) => redis::RedisError::from((kind, "Sentinel lookup", self.why.clone())),
            None => unreachable(self.why.clone()),
        }
    }
}

fn unreachable(why: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        why,
    ))
}

/// A parsed `redis+sentinel://` URL. Its `Debug` shows no credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    tls: bool,
    /// `user:password` for the data servers, as written (still percent-encoded).
    userinfo: Option<String>,
    sentinels: Vec<(String, u16)>,
    master: String,
    db: u32,
    /// `user:password` for the Sentinels.
    sentinel_userinfo: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("tls", &self.tls)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SentinelUrl {
    /// `Ok(None)` for a URL of another scheme.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a Sentinel URL that does not parse, naming what is wrong (never
    /// the password).
    pub(crate) fn parse(url: &str) -> Result<Option<SentinelUrl>> {
        match SentinelUrl::parse_parts(url) {
            None => Ok(None),
            Some(Ok(parsed)) => Ok(Some(parsed)),
            Some(Err(why)) => Err(Error::Config(format!(
                "invalid Sentinel URL {}: {why} (expected redis+sentinel://[user:password@]host[:port][,host[:port]...]/master-name[/db]; \
                 percent-encode '/', '?', '#' and '@' in passwords)",
                crate::error::redact(url)
            ))),
        }
    }

    /// The URL, shown without its passwords: rebuilt from what was parsed, so nothing of a
    /// malformed password can show through. `None` for a URL of another scheme; a Sentinel
    /// URL that does not parse shows nothing but its scheme.
    pub(crate) fn redacted(url: &str) -> Option<String> {
        let parsed = SentinelUrl::parse_parts(url)?;
        let parts = parsed
            .as_ref()
            .ok()
            .map(|u| (u.userinfo.as_deref(), u.sentinels.as_slice()));
        let (auth, hosts) = shown(url, "Sentinel", parts);
        let Ok(u) = parsed else {
            return Some(auth);
        };
        let mut out = format!("{}+sentinel://{auth}{hosts}/{}", scheme(u.tls), u.master);
        if u.db != 0 {
            out.push_str(&format!("/{}", u.db));
        }
        if let Some(info) = u.sentinel_userinfo.as_deref() {
            let user = info.split_once(':').map_or("", |(user, _)| user);
            out.push_str(&format!("?sentinel_user={user}&sentinel_password=***"));
        }
        Some(out)
    }

    /// The parts of a Sentinel URL, `None` for another scheme. A reason never quotes the URL:
    /// a malformed password would show through a quoted host or port.
    fn parse_parts(url: &str) -> Option<std::result::Result<SentinelUrl, &'static str>> {
        let (tls, rest) = strip_scheme(url, "sentinel")?;
        Some(SentinelUrl::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> std::result::Result<SentinelUrl, &'static str> {
        let bad = |why: &'static str| why;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            sentinels.push(parse_host(host, SENTINEL_PORT)?);
        }
        if sentinels.len() > MAX_SENTINELS {
            return Err("more than 64 Sentinels");
        }
        let mut path = path.split('/');
        let master = path.next().unwrap_or_default().to_string();
        if master.is_empty()
            || master.len() > 128
            || !master
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(
                "the master name must be 1 to 128 letters, digits, '-', '_' or '.'",
            ));
        }
        let db = match path.next() {
            None | Some("") => 0,
            Some(db) if db.bytes().all(|b| b.is_ascii_digit()) => db
                .parse()
                .map_err(|_| bad("the database must be a number"))?,
            Some(_) => return Err(bad("the database must be a number")),
        };
        if path.next().is_some() {
            return Err(bad("too many path segments"));
        }
        let (mut s_user, mut s_pass) = (None, None);
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("sentinel_user", v)) => s_user = Some(v.to_string()),
                Some(("sentinel_password", v)) => s_pass = Some(v.to_string()),
                _ => {
                    return Err(bad(
                        "unknown query parameter (sentinel_user and sentinel_password are known)",
                    ))
                }
            }
        }
        let sentinel_userinfo = match (s_user, s_pass) {
            (None, None) => None,
            (user, pass) => Some(format!(
                "{}:{}",
                user.unwrap_or_default(),
                pass.unwrap_or_default()
            )),
        };
        // Credentials are handed on inside URLs: a raw delimiter in them would cut the URL
        // elsewhere, later and less clearly.
        let raw = |info: &Option<String>| {
            info.as_deref()
                .is_some_and(|i| i.contains(['/', '?', '#', '@']))
        };
        if raw(&userinfo) || raw(&sentinel_userinfo) {
            return Err(bad("a password holds a raw '/', '?', '#' or '@'"));
        }
        Ok(SentinelUrl {
            tls,
            userinfo,
            sentinels,
            master,
            db,
            sentinel_userinfo,
        })
    }

    /// The URL of the data server at `host:port`.
    fn node_url(&self, host: &str, port: u16) -> String {
        server_url(
            self.tls,
            self.userinfo.as_deref(),
            host,
            port,
            Some(self.db),
        )
    }

    /// The URL of the Sentinel at `host:port`.
    fn sentinel_url(&self, host: &str, port: u16) -> String {
        server_url(
            self.tls,
            self.sentinel_userinfo.as_deref(),
            host,
            port,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_its_sentinels_master_and_database() {
        let u = SentinelUrl::parse(
            "redis+sentinel://app:s3cret@10.0.0.1,10.0.0.2:26380,[::1]:5000/mymaster/2?sentinel_password=sp",
        )
        .expect("parses")
        .expect("is a sentinel url");
        assert_eq!(
            u.sentinels,
            vec![
                ("10.0.0.1".to_string(), SENTINEL_PORT),
                ("10.0.0.2".to_string(), 26380),
                ("::1".to_string(), 5000)
            ]
        );
        assert_eq!(u.master, "mymaster");
        assert_eq!(
            u.node_url("10.1.1.1", 6380),
            "redis://app:s3cret@10.1.1.1:6380/2"
        );
        assert_eq!(
            u.node_url("fe80::1", 6380),
            "redis://app:s3cret@[fe80::1]:6380/2"
        );
        assert_eq!(u.sentinel_url("::1", 5000), "redis://:sp@[::1]:5000");
        let tls = SentinelUrl::parse("rediss+sentinel://h/m")
            .expect("ok")
            .expect("some");
        assert_eq!(tls.node_url("h", 1), "rediss://h:1/0");
        assert_eq!(tls.sentinel_url("h", 1), "rediss://h:1");
    }

    #[test]
    fn other_schemes_are_not_sentinel_urls() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://h",
            "redis+unix:///tmp/s",
        ] {
            assert_eq!(SentinelUrl::parse(url).expect("ok"), None, "{url}");
        }
    }

    #[test]
    fn a_malformed_sentinel_url_says_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("redis+sentinel://u:hunter2@h1,h2", "no master name"),
            ("redis+sentinel://u:hunter2@h1/", "master name"),
            ("redis+sentinel://u:hunter2@h1/m{x}", "master name"),
            ("redis+sentinel://u:hunter2@h1:99999/m", "port"),
            ("redis+sentinel://u:hun/ter2@h1/m", "port"),
            (
                "redis+sentinel://u:hunter2p@ss?whunter2@h1/m",
                "master name",
            ),
            ("redis+sentinel://u:hun@ter2@h1/m", "raw"),
            ("redis+sentinel://h1/m?sentinel_password=hun#ter2", "raw"),
            ("redis+sentinel://u:hunter2@::1:26379/m", "IPv6"),
            ("redis+sentinel://u:hunter2@h1/m/+1", "database"),
            ("redis+sentinel://u:hunter2@,h2/m", "empty host"),
            ("redis+sentinel://u:hunter2@h1/m/x", "database"),
            ("redis+sentinel://u:hunter2@h1/m/1/2", "too many"),
            ("redis+sentinel://u:hunter2@h1/m?pw=1", "unknown query"),
            ("redis+sentinel://u:hunter2@[::1/m", "unclosed"),
        ] {
            let e = SentinelUrl::parse(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
    }
}
