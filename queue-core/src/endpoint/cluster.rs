//! A Redis Cluster, found from its seed nodes.
//!
//! A cluster URL lists some of its nodes (any of them, masters or replicas: the client asks
//! them for the slot map and finds the others there):
//!
//! ```text
//! redis+cluster://[user:password@]host[:port][,host[:port]...]
//! ```
//!
//! The default port is 6379 and the database is always 0 (a cluster has no other);
//! `rediss+cluster://` speaks TLS to every node, with the client's TLS files.
//!
//! Every key of one queue, one cache entry, one rate limit or one user's sessions shares a hash
//! tag, so each script runs on one node; redis-rs sends each command to the master of its
//! slot, follows `MOVED` and `ASK` when slots move, and retries `TRYAGAIN` and `CLUSTERDOWN`
//! (a failover in progress) with backoff. What has no key goes to one node (pub/sub, which a
//! cluster forwards to every node) or to every master in turn (a walk over keys).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{parse_host, scheme, server_url, shown, strip_scheme};
use crate::engine::client::{open_redis, tls_certificates, ClientConfig};
use crate::error::{Error, Result};

/// The default port of a cluster node.
const NODE_PORT: u16 = 6379;

/// The most seed nodes a URL may list.
const MAX_SEEDS: usize = 64;

/// How often redis-rs retries a command a cluster refused for now (`TRYAGAIN`, `CLUSTERDOWN`,
/// a node that went away), and how long it waits in between: enough to outlast a failover
/// (`cluster-node-timeout` plus an election, a few seconds) before a caller sees an error.
const RETRIES: u32 = 16;
const MIN_RETRY_WAIT_MS: u64 = 20;
const MAX_RETRY_WAIT_MS: u64 = 500;

/// A cluster: the redis-rs cluster client, and a plain client per seed node for what one node
/// serves.
pub(crate) struct Cluster {
    url: ClusterUrl,
    client: redis::cluster::ClusterClient,
    /// The same client for each seed alone: when the one with every seed cannot connect (a
    /// seed that is not a Redis answers garbage), each seed is tried by itself.
    singles: Vec<redis::cluster::ClusterClient>,
    nodes: Vec<redis::Client>,
    /// The seed to use first; moves on when one fails.
    next: AtomicUsize,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("seeds", &self.url.seeds)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster `url` names. Nothing connects yet.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for unreadable TLS files or seeds redis-rs refuses.
    pub(crate) fn open(url: ClusterUrl, config: &ClientConfig) -> Result<Cluster> {
        let seeds: Vec<String> = url.seeds.iter().map(|(h, p)| url.node_url(h, *p)).collect();
        let nodes = seeds
            .iter()
            .map(|seed| {
                open_redis(&ClientConfig {
                    url: seed.clone(),
                    ..config.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let probe = ClientConfig {
            url: seeds.first().cloned().unwrap_or_default(),
            ..config.clone()
        };
        let certs = tls_certificates(&probe)?;
        let build = |seeds: Vec<String>| {
            let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(RETRIES)
                .min_retry_wait(MIN_RETRY_WAIT_MS)
                .max_retry_wait(MAX_RETRY_WAIT_MS);
            if let Some(certs) = certs.clone() {
                builder = builder.certs(certs);
            }
            builder.build().map_err(|e| {
                Error::Config(format!(
                    "invalid cluster URL {}: {e}",
                    crate::error::redact(&config.url)
                ))
            })
        };
        let client = build(seeds.clone())?;
        let singles = seeds
            .iter()
            .map(|seed| build(vec![seed.clone()]))
            .collect::<Result<Vec<_>>>()?;
        Ok(Cluster {
            url,
            client,
            singles,
            nodes,
            next: AtomicUsize::new(0),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        })
    }

    /// The seed node to use now.
    pub(crate) fn node(&self) -> redis::Client {
        let i = self.next.load(Ordering::Relaxed) % self.nodes.len().max(1);
        self.nodes[i].clone()
    }

    /// Moves on to the next seed node (the one in use failed).
    pub(crate) fn next_node(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
    }

    /// How many seed nodes the URL lists.
    pub(crate) fn seeds(&self) -> usize {
        self.nodes.len()
    }

    /// A new connection to the cluster (it reads the slot map from a seed first), its calls
    /// bounded by `response_timeout` (the client's when `None`).
    ///
    /// # Errors
    ///
    /// A connection error when no seed answers with a slot map.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped connect leaves nothing behind.
    pub(crate) async fn connect(
        &self,
        response_timeout: Option<Duration>,
    ) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(response_timeout.unwrap_or(self.response_timeout));
        let all = self
            .client
            .get_async_connection_with_config(config.clone())
            .await;
        let Err(first) = all else { return all };
        // Each seed alone, the one in use first.
        let start = self.next.load(Ordering::Relaxed);
        for i in 0..self.singles.len() {
            let at = (start + i) % self.singles.len();
            if let Ok(con) = self.singles[at]
                .get_async_connection_with_config(config.clone())
                .await
            {
                return Ok(con);
            }
        }
        Err(first)
    }
}

/// The masters in a `CLUSTER SLOTS` reply (each serves slots), as (host, port), each once, in
/// the order of their first range.
pub(crate) fn masters_of(slots: &[redis::Value]) -> Vec<(String, u16)> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in slots {
        // [start, end, [host, port, id, ...], replicas...]
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else {
            continue;
        };
        let (Some(host), Some(Value::Int(port))) = (master.first().and_then(text), master.get(1))
        else {
            continue;
        };
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        if !host.is_empty() && !out.iter().any(|(h, p)| *h == host && *p == port) {
            out.push((host, port));
        }
    }
    out
}

/// A parsed `redis+cluster://` URL. Its `Debug` shows no credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClusterUrl {
    tls: bool,
    /// `user:password` for the nodes, as written (still percent-encoded).
    userinfo: Option<String>,
    seeds: Vec<(String, u16)>,
}

impl std::fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("tls", &self.tls)
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl ClusterUrl {
    /// `Ok(None)` for a URL of another scheme.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a cluster URL that does not parse, naming what is wrong (never
    /// the password).
    pub(crate) fn parse(url: &str) -> Result<Option<ClusterUrl>> {
        match ClusterUrl::parse_parts(url) {
            None => Ok(None),
            Some(Ok(parsed)) => Ok(Some(parsed)),
            Some(Err(why)) => Err(Error::Config(format!(
                "invalid cluster URL {}: {why} (expected redis+cluster://[user:password@]host[:port][,host[:port]...]; \
                 percent-encode '/', '?', '#' and '@' in passwords)",
                crate::error::redact(url)
            ))),
        }
    }

    /// The URL, shown without its password, rebuilt from what was parsed. `None` for a URL of
    /// another scheme; one that does not parse shows nothing but its scheme.
    pub(crate) fn redacted(url: &str) -> Option<String> {
        let parsed = ClusterUrl::parse_parts(url)?;
        let parts = parsed
            .as_ref()
            .ok()
            .map(|u| (u.userinfo.as_deref(), u.seeds.as_slice()));
        let (auth, hosts) = shown(url, "cluster", parts);
        Some(match parsed {
            Err(_) => auth,
            Ok(u) => format!("{}+cluster://{auth}{hosts}", scheme(u.tls)),
        })
    }

    fn parse_parts(url: &str) -> Option<std::result::Result<ClusterUrl, &'static str>> {
        let (tls, rest) = strip_scheme(url, "cluster")?;
        Some(ClusterUrl::parse_rest(tls, rest))
    }

    fn parse_rest(tls: bool, rest: &str) -> std::result::Result<ClusterUrl, &'static str> {
        if rest.contains(['?', '#']) {
            return Err("a cluster URL takes no query (a password holds a raw '?' or '#'?)");
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !matches!(path, "" | "0") {
            return Err("a cluster has database 0 only (a password holds a raw '/'?)");
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        if userinfo.as_deref().is_some_and(|i| i.contains('@')) {
            return Err("a password holds a raw '/', '?', '#' or '@'");
        }
        let mut seeds = Vec::new();
        for host in hosts.split(',') {
            seeds.push(parse_host(host, NODE_PORT)?);
        }
        if seeds.len() > MAX_SEEDS {
            return Err("more than 64 seed nodes");
        }
        Ok(ClusterUrl {
            tls,
            userinfo,
            seeds,
        })
    }

    /// The URL of the node at `host:port`.
    fn node_url(&self, host: &str, port: u16) -> String {
        server_url(self.tls, self.userinfo.as_deref(), host, port, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seeds() {
        let u = ClusterUrl::parse("redis+cluster://app:s3cret@10.0.0.1,10.0.0.2:7001,[::1]:7002")
            .expect("parses")
            .expect("is a cluster url");
        assert_eq!(
            u.seeds,
            vec![
                ("10.0.0.1".to_string(), NODE_PORT),
                ("10.0.0.2".to_string(), 7001),
                ("::1".to_string(), 7002)
            ]
        );
        assert_eq!(u.node_url("::1", 7002), "redis://app:s3cret@[::1]:7002");
        let tls = ClusterUrl::parse("rediss+cluster://h/0")
            .expect("ok")
            .expect("some");
        assert_eq!(tls.node_url("h", 1), "rediss://h:1");
        assert_eq!(
            ClusterUrl::redacted("redis+cluster://app:s3cret@h1,h2:7001").as_deref(),
            Some("redis+cluster://app:***@h1:6379,h2:7001")
        );
        assert_eq!(ClusterUrl::parse("redis://h").expect("ok"), None);
    }

    #[test]
    fn a_malformed_cluster_url_says_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("redis+cluster://u:hunter2@h1/3", "database 0"),
            ("redis+cluster://u:hun/ter2@h1", "port"),
            ("redis+cluster://u:hun@ter2@h1", "raw"),
            ("redis+cluster://u:hun?ter2@h1", "query"),
            ("redis+cluster://u:hunter2@h1:99999", "port"),
            ("redis+cluster://u:hunter2@,h2", "empty host"),
            ("redis+cluster://u:hunter2@::1:7000", "IPv6"),
        ] {
            let e = ClusterUrl::parse(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{url}: {e}");
            let shown = ClusterUrl::redacted(url).expect("a cluster url");
            assert!(!shown.contains("hunter2"), "{url}: {shown}");
        }
    }

    #[test]
    fn the_masters_are_read_from_the_slot_map() {
        use redis::Value;
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, master: Value| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                master,
                node("replica", 1),
            ])
        };
        let slots = vec![
            range(0, 100, node("127.0.0.1", 7000)),
            range(101, 200, node("redis-b.example", 7001)),
            range(201, 300, node("127.0.0.1", 7000)),
            range(301, 400, node("", 7002)),
            Value::Int(3),
            range(401, 500, node("h", 70_000)),
        ];
        assert_eq!(
            masters_of(&slots),
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("redis-b.example".to_string(), 7001)
            ]
        );
    }
}
