//! Where a client connects: one server named by its URL, the primary a set of Redis Sentinels
//! names (`redis+sentinel://`, [`sentinel`]), found again after every failover, or a Redis
//! Cluster (`redis+cluster://`, [`cluster`]), whose commands go to the node of their keys.
//!
//! The rest of the crate sees an [`Endpoint`] and the [`Connection`]s it opens: a connection
//! to one server or to a whole cluster, which callers use alike (a script's keys share a slot,
//! so it runs on one node either way).

mod cluster;
mod sentinel;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;

use crate::engine::client::{open_redis, ClientConfig};
use crate::error::{ErrorKind, Result};

pub(crate) use cluster::{Cluster, ClusterUrl};
pub use sentinel::SENTINEL_PORT;
pub(crate) use sentinel::{Sentinel, SentinelUrl};

/// The servers a client talks to.
pub(crate) enum Endpoint {
    /// One server, at a fixed address.
    Direct(Box<redis::Client>),
    /// The primary the Sentinels name.
    Sentinel(Sentinel),
    /// The masters of a cluster, found from its seed nodes.
    Cluster(Box<Cluster>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Direct(_) => f.write_str("Direct"),
            Endpoint::Sentinel(s) => s.fmt(f),
            Endpoint::Cluster(c) => c.fmt(f),
        }
    }
}

impl Endpoint {
    /// The endpoint `config.url` names. Behind Sentinels, a task follows their
    /// `+switch-master` announcements for as long as the endpoint lives (so it must be opened
    /// inside a Tokio runtime).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] for a malformed URL or unreadable TLS files.
    pub(crate) fn open(config: &ClientConfig) -> Result<Endpoint> {
        if let Some(url) = SentinelUrl::parse(&config.url)? {
            return Ok(Endpoint::Sentinel(Sentinel::open(url, config)?));
        }
        if let Some(url) = ClusterUrl::parse(&config.url)? {
            return Ok(Endpoint::Cluster(Box::new(Cluster::open(url, config)?)));
        }
        Ok(Endpoint::Direct(Box::new(open_redis(config)?)))
    }

    /// The client of one server to talk to now, and the epoch it belongs to (see
    /// [`Endpoint::epoch`]): the server, the primary the Sentinels name, or on a cluster the
    /// node that answered last (for what any node serves: pub/sub, the version check).
    ///
    /// # Errors
    ///
    /// A connection error when no Sentinel names a primary that answers as one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped lookup leaves the address unknown, and the next call looks again.
    pub(crate) async fn client(&self) -> redis::RedisResult<(u64, redis::Client)> {
        match self {
            Endpoint::Direct(c) => Ok((0, (**c).clone())),
            Endpoint::Sentinel(s) => s.client().await,
            Endpoint::Cluster(c) => Ok((0, c.node())),
        }
    }

    /// The cluster, when the endpoint is one.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        match self {
            Endpoint::Cluster(c) => Some(c),
            _ => None,
        }
    }

    /// How many servers [`Endpoint::client`] may name in turn when one does not answer: the
    /// seed nodes of a cluster, else one.
    pub(crate) fn candidates(&self) -> usize {
        self.cluster().map_or(1, Cluster::seeds)
    }

    /// Moves on to the next of [`Endpoint::candidates`] (the one named now did not answer as
    /// a Redis should).
    pub(crate) fn skip_candidate(&self) {
        if let Some(c) = self.cluster() {
            c.next_node();
        }
    }

    /// Whether the server can change under the client (behind Sentinels).
    pub(crate) fn follows_failovers(&self) -> bool {
        matches!(self, Endpoint::Sentinel(_))
    }

    /// Changes whenever the primary may have moved: a connection opened in an earlier epoch
    /// is to be replaced. Always 0 for one server and for a cluster (whose connection follows
    /// the slots itself).
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            Endpoint::Sentinel(s) => s.epoch(),
            _ => 0,
        }
    }

    /// Resolves when epoch `epoch` has ended; never for one server or a cluster. For blocking
    /// calls, which would otherwise wait on an old primary nobody writes to any more.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn moved(&self, epoch: u64) {
        match self {
            Endpoint::Sentinel(s) => s.moved(epoch).await,
            _ => std::future::pending().await,
        }
    }

    /// Notes a failed call made on a connection of epoch `epoch`: if a failover explains it,
    /// the epoch ends and the primary is looked up again before the next call. Returns
    /// whether it did. On a cluster, a node that failed is tried last next time.
    pub(crate) fn observe(&self, epoch: u64, e: &redis::RedisError) -> bool {
        let sign = is_failover_sign(ErrorKind::of_redis(e));
        match self {
            Endpoint::Sentinel(s) if sign => {
                s.end_epoch(epoch, &e.to_string());
                true
            }
            Endpoint::Cluster(c) if sign => {
                c.next_node();
                false
            }
            _ => false,
        }
    }
}

/// A connection to one server or to a cluster: what every call of the crate goes through.
#[derive(Clone)]
pub(crate) enum Connection {
    /// The shared connection to one server, reconnecting by itself.
    Manager(ConnectionManager),
    /// A connection of its own to one server.
    Multiplexed(MultiplexedConnection),
    /// Connections to every node of a cluster, each command sent to the node of its keys
    /// (redis-rs follows `MOVED` and `ASK`, and retries `TRYAGAIN` and `CLUSTERDOWN`).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Manager(c) => c.req_packed_command(cmd),
            Connection::Multiplexed(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            // A transaction is never split: it must run whole on one node, or fail.
            Connection::Cluster(c) => match split_by_slot(pipeline) {
                Some(parts) if !pipeline.is_transaction() && offset == 0 => {
                    Box::pin(run_split(c, parts, pipeline.len()))
                }
                _ => c.req_packed_commands(pipeline, offset, count),
            },
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Manager(c) => c.get_db(),
            Connection::Multiplexed(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A pipeline whose commands are in more than one slot, split into one pipeline per slot
/// (each command's position in the original beside it); `None` when it needs no split.
///
/// A cluster runs a pipeline on one node, and redis-rs refuses one that spans slots. The
/// crate's pipelines are batches of independent commands, never transactions, so on a cluster
/// each slot's part runs on its own: the order within a slot is kept, the order across slots is
/// not (nothing relies on it). A keyless command (`WAIT` after a script) stays with the command
/// before it, so it runs on the node that took that write.
fn split_by_slot(pipeline: &redis::Pipeline) -> Option<Vec<(redis::Pipeline, Vec<usize>)>> {
    let slots: Vec<Option<u16>> = pipeline.cmd_iter().map(first_key_slot).collect();
    let first = slots.iter().flatten().next().copied()?;
    if slots.iter().flatten().all(|&s| s == first) {
        return None;
    }
    let mut parts: Vec<(u16, redis::Pipeline, Vec<usize>)> = Vec::new();
    let mut current = first;
    for (i, (cmd, slot)) in pipeline.cmd_iter().zip(&slots).enumerate() {
        current = slot.unwrap_or(current);
        let at = match parts.iter().position(|(s, _, _)| *s == current) {
            Some(at) => at,
            None => {
                parts.push((current, redis::pipe(), Vec::new()));
                parts.len() - 1
            }
        };
        parts[at].1.add_command(cmd.clone());
        parts[at].2.push(i);
    }
    Some(parts.into_iter().map(|(_, p, at)| (p, at)).collect())
}

/// Runs the parts of a split pipeline, one after the other, and puts the replies back in the
/// original order.
async fn run_split(
    con: &mut ClusterConnection,
    parts: Vec<(redis::Pipeline, Vec<usize>)>,
    len: usize,
) -> redis::RedisResult<Vec<redis::Value>> {
    let mut out = vec![redis::Value::Nil; len];
    for (part, at) in parts {
        let replies = con.req_packed_commands(&part, 0, part.len()).await?;
        for (i, reply) in at.into_iter().zip(replies) {
            out[i] = reply;
        }
    }
    Ok(out)
}

/// The slot of a command's first key, for the commands the crate pipelines: the argument after
/// the name, or after the script and key count of `EVALSHA`; `None` for a keyless one.
fn first_key_slot(cmd: &redis::Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"WAIT" | b"WAITAOF" | b"PING" | b"INFO" | b"TIME" | b"SCRIPT" | b"CLUSTER" => None,
        b"EVALSHA" | b"EVAL" | b"EVALSHA_RO" | b"EVAL_RO" => {
            let _script = args.next();
            match args.next()? {
                b"0" => None,
                _ => args.next(),
            }
        }
        _ => args.next(),
    }?;
    Some(crate::keys::hash_slot(key))
}

/// Where a keyless command goes on a cluster; on one server, there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The master that holds this slot.
    Slot(u16),
    /// The node at this address.
    Node(String, u16),
}

impl Connection {
    /// Runs `cmd` on `target` (on one server, simply runs it).
    ///
    /// # Errors
    ///
    /// The connection's or the server's error.
    ///
    /// # Cancel safety
    ///
    /// As the command's.
    pub(crate) async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        target: &Target,
    ) -> redis::RedisResult<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let Connection::Cluster(c) = self else {
            return cmd.query_async(self).await;
        };
        let routing = match target {
            Target::Slot(slot) => {
                SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master))
            }
            Target::Node(host, port) => SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            },
        };
        let value = c
            .route_command(cmd.clone(), RoutingInfo::SingleNode(routing))
            .await?;
        Ok(redis::FromRedisValue::from_redis_value(value)?)
    }

    /// The masters of the cluster (host and port), or `None` on one server.
    ///
    /// # Errors
    ///
    /// The connection's or the server's error; a reply that does not parse.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub(crate) async fn masters(&mut self) -> redis::RedisResult<Option<Vec<(String, u16)>>> {
        let Connection::Cluster(c) = self else {
            return Ok(None);
        };
        // The slot map as redis-rs reads it (its connections are named by these addresses,
        // which may be host names).
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        Ok(Some(cluster::masters_of(&slots)))
    }
}

/// Whether a failure of this kind may mean the primary moved.
fn is_failover_sign(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::ReadOnly | ErrorKind::MasterDown
    )
}

/// For a URL of scheme `redis+<kind>://` or `rediss+<kind>://`: whether it is TLS, and the
/// rest. `None` for another scheme.
fn strip_scheme<'u>(url: &'u str, kind: &str) -> Option<(bool, &'u str)> {
    // A scheme is case-insensitive (RFC 3986).
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let tls = match scheme.strip_suffix(kind)?.strip_suffix('+')? {
        "redis" => false,
        "rediss" => true,
        _ => return None,
    };
    Some((tls, rest))
}

/// The hosts of a URL, with their ports.
type Hosts = [(String, u16)];

/// `redis` or `rediss`.
fn scheme(tls: bool) -> &'static str {
    if tls {
        "rediss"
    } else {
        "redis"
    }
}

/// How a URL of a multi-host scheme shows: rebuilt from its parts, `user:***@` for its
/// credentials; when it does not parse, nothing but its scheme and `what` it is.
fn shown(url: &str, what: &str, parsed: Option<(Option<&str>, &Hosts)>) -> (String, String) {
    match parsed {
        None => (
            format!(
                "{}://<a {what} URL that does not parse>",
                url.split("://").next().unwrap_or_default()
            ),
            String::new(),
        ),
        Some((userinfo, hosts)) => {
            let auth = match userinfo {
                Some(info) => match info.split_once(':') {
                    Some((user, _)) => format!("{user}:***@"),
                    None => "***@".to_string(),
                },
                None => String::new(),
            };
            let hosts: Vec<String> = hosts.iter().map(|(h, p)| host_port(h, *p)).collect();
            (auth, hosts.join(","))
        }
    }
}

/// The URL of one server: `<scheme>://[userinfo@]host:port[/db]`.
fn server_url(tls: bool, userinfo: Option<&str>, host: &str, port: u16, db: Option<u32>) -> String {
    let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let db = db.map(|d| format!("/{d}")).unwrap_or_default();
    format!("{}://{auth}{}{db}", scheme(tls), host_port(host, port))
}

/// `host:port`, the host in brackets when it is an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A `host[:port]` of a URL's host list; an IPv6 address in brackets.
fn parse_host(host: &str, default_port: u16) -> std::result::Result<(String, u16), &'static str> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']').ok_or("an unclosed '[' in a host")?;
        match after {
            "" => (name, None),
            p => (
                name,
                Some(p.strip_prefix(':').ok_or("junk after a ']' in a host")?),
            ),
        }
    } else {
        match host.split_once(':') {
            // An IPv6 address goes in brackets: `[::1]:26379`.
            Some((n, p)) if !p.contains(':') => (n, Some(p)),
            Some(_) => return Err("an IPv6 host without brackets (write [::1]:26379)"),
            None => (host, None),
        }
    };
    if name.is_empty() {
        return Err("an empty host");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b))
    {
        return Err("a host that is not a name or an address");
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse().ok())
            .flatten()
            .ok_or("a port that is not a number from 0 to 65535")?,
    };
    Ok((name.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_host_schemes_are_read_whatever_their_case() {
        assert_eq!(
            strip_scheme("REDIS+CLUSTER://h", "cluster"),
            Some((false, "h"))
        );
        assert_eq!(
            strip_scheme("Rediss+Sentinel://h/m", "sentinel"),
            Some((true, "h/m"))
        );
        assert_eq!(strip_scheme("redis://h", "cluster"), None);
        assert_eq!(strip_scheme("redisx+cluster://h", "cluster"), None);
    }

    #[test]
    fn a_pipeline_over_several_slots_is_split_by_slot_and_a_wait_stays_with_its_write() {
        let mut p = redis::pipe();
        p.hset("{a}:x", "f", 1)
            .cmd("EVALSHA")
            .arg("sha")
            .arg(1)
            .arg("{b}:y")
            .cmd("WAIT")
            .arg(1)
            .arg(100)
            .zadd("{a}:z", "m", 1)
            .del("{b}:w");
        let parts = split_by_slot(&p).expect("split");
        let at: Vec<Vec<usize>> = parts.iter().map(|(_, at)| at.clone()).collect();
        assert_eq!(at, vec![vec![0, 3], vec![1, 2, 4]]);
        let mut one = redis::pipe();
        one.hset("{a}:x", "f", 1)
            .cmd("WAIT")
            .arg(1)
            .arg(0)
            .del("{a}:y");
        assert!(split_by_slot(&one).is_none(), "one slot: sent as it is");
    }

    #[test]
    fn a_failover_is_suspected_only_for_errors_it_explains() {
        assert!(is_failover_sign(ErrorKind::ReadOnly));
        assert!(is_failover_sign(ErrorKind::Connection));
        assert!(!is_failover_sign(ErrorKind::Script));
        assert!(!is_failover_sign(ErrorKind::Auth));
    }
}
