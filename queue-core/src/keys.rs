//! The only place that builds Redis key names, for the engine and the toolkit alike.
//!
//! Every key of a queue is `<namespace>:{<queue>}:<suffix>`: the braces are a Redis Cluster hash
//! tag, so all keys one script touches live in one slot and no script needs rewriting for Cluster.
//! Queue names and namespaces are validated (no braces, spaces or control characters); free-form
//! user strings inside toolkit keys (cache keys, tags, rate-limit subjects) go through
//! [`escape`], an injective encoding, so two different inputs never name the same key and no
//! input can forge a separator, a hash tag or a glob.
//!
//! Four builders take a free-form string unescaped, on purpose: an idempotency key
//! ([`QueueKeys::unique`]), a user ([`NamespaceKeys::user_sessions`]), an event channel
//! ([`NamespaceKeys::event_channel`]) and a worker id ([`NamespaceKeys::worker`]). Each string
//! is the last segment of its key behind a fixed prefix, so the mapping is still injective
//! (no other builder produces that prefix), and escaping it now would orphan the idempotency
//! keys and session indexes already stored. Patterns built from them escape the literal part.

use crate::error::{Error, Result};

/// Default key namespace.
pub const DEFAULT_NAMESPACE: &str = "queue";

/// Longest accepted queue name.
pub const MAX_QUEUE_NAME: usize = 128;

/// The Redis keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    queue: String,
    prefix: String,
}

impl QueueKeys {
    /// Keys of `queue` under `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the name is empty, too long, or holds characters that would break
    /// the hash tag (`{`, `}`) or the key layout (whitespace, control characters).
    pub fn new(namespace: &str, queue: &str) -> Result<QueueKeys> {
        validate_name("queue name", queue)?;
        validate_namespace(namespace)?;
        Ok(QueueKeys {
            queue: queue.to_string(),
            prefix: format!("{namespace}:{{{queue}}}"),
        })
    }

    /// The queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Sorted set of jobs ready to run (score 0, member = priority + id + envelope).
    pub fn pending(&self) -> String {
        self.key("pending")
    }
    /// Sorted set of jobs waiting for their time (score = run-at in ms).
    pub fn scheduled(&self) -> String {
        self.key("scheduled")
    }
    /// Sorted set of failed jobs waiting for their retry (score = run-at in ms).
    pub fn retry(&self) -> String {
        self.key("retry")
    }
    /// Sorted set of jobs taken back from a worker that was lost (score 0, members as in
    /// pending): a worker process leases at most one of them at a time, so a job that kills
    /// its worker is found out alone instead of taking its neighbours down with it again.
    pub fn recovered(&self) -> String {
        self.key("recovered")
    }
    /// Hash of throughput counters: a ring of 360 ten-second buckets (`t:<slot>` bucket number,
    /// `c:<slot>` completed, `f:<slot>` failed attempts), so it never grows.
    pub fn throughput(&self) -> String {
        self.key("throughput")
    }
    /// Hash of one minute's metrics history (`engine/history.rs` has its fields); `minute` is
    /// Unix milliseconds / 60,000. Expires on its own, so only the last 73 hours exist.
    pub fn metrics(&self, minute: i64) -> String {
        self.key(&format!("metrics:{minute}"))
    }
    /// Hash of one hour's metrics history, the sum of its minutes (the long charts read 72 of
    /// these instead of 4,320 minutes); `hour` is Unix milliseconds / 3,600,000.
    pub fn metrics_hour(&self, hour: i64) -> String {
        self.key(&format!("metrics:hour:{hour}"))
    }
    /// Capped stream of lifecycle events (when enabled); also the name of their pub/sub
    /// channel.
    pub fn events(&self) -> String {
        self.key("events")
    }
    /// Hash of cron state for schedules that enqueue into this queue: `last:<name>` (ms of the
    /// last fired tick), `paused:<name>`.
    pub fn cron(&self) -> String {
        self.key("cron")
    }
    /// Sorted set of leases (score = lease deadline in ms, member = `id:token`).
    pub fn active(&self) -> String {
        self.key("active")
    }
    /// Hash of leased jobs: id -> member, kept so an expired lease can be recovered.
    pub fn inflight(&self) -> String {
        self.key("inflight")
    }
    /// Sorted set of finished jobs kept by the retention policy (score = finish time).
    pub fn completed(&self) -> String {
        self.key("completed")
    }
    /// Hash of outcomes of retained completed jobs: id -> outcome.
    pub fn results(&self) -> String {
        self.key("results")
    }
    /// Sorted set of dead-lettered job ids (score = time of death).
    pub fn dead(&self) -> String {
        self.key("dead")
    }
    /// Hash of dead-lettered jobs: id -> member (with the error history in the envelope).
    pub fn dead_jobs(&self) -> String {
        self.key("dead:jobs")
    }
    /// Hash of queue state: `paused`, `fence` (lease token counter).
    pub fn meta(&self) -> String {
        self.key("meta")
    }
    /// Hash of counters: `completed`, `failed`, `retried`, `dead`, `recovered`.
    pub fn stats(&self) -> String {
        self.key("stats")
    }
    /// List used as a wake-up signal for idle workers (holds at most one element).
    pub fn wake(&self) -> String {
        self.key("wake")
    }
    /// Sorted set of ids someone is waiting on (score = when the wait expires).
    pub fn waiters(&self) -> String {
        self.key("waiters")
    }
    /// Pub/sub channel where outcomes of awaited jobs are published.
    pub fn done_channel(&self) -> String {
        self.key("done")
    }
    /// Hash of the workers watching this queue: owner prefix (see `Broker`) -> liveness record
    /// `<since>:<confirmed>:<beat_at>:<suspect_at>:<channel>` (see `beat.lua`).
    pub fn watchers(&self) -> String {
        self.key("watchers")
    }
    /// Sorted set of the lease tokens each worker may hold (score 0, member = owner prefix +
    /// token), so the leases of a worker whose connection closed can be found.
    pub fn owners(&self) -> String {
        self.key("owners")
    }
    /// Pub/sub channel a worker stays subscribed to while it lives: its subscriber count drops
    /// to 0 the moment the worker's process dies and the kernel closes its socket. `session`
    /// counts the worker's subscriptions: a channel name is never subscribed twice, so one seen
    /// alive and then empty really closed (a Redis restart drops every subscription at once,
    /// and the worker then subscribes under a new name). The worker id is escaped.
    pub fn alive_channel(&self, worker: &str, session: u64) -> String {
        self.key(&format!("alive:{}:{session}", escape(worker)))
    }
    /// Every key of the queue except the idempotency keys (which live under
    /// `<namespace>:{<queue>}:unique:*`).
    pub fn all_fixed(&self) -> Vec<String> {
        vec![
            self.pending(),
            self.scheduled(),
            self.retry(),
            self.recovered(),
            self.active(),
            self.inflight(),
            self.completed(),
            self.results(),
            self.dead(),
            self.dead_jobs(),
            self.meta(),
            self.stats(),
            self.wake(),
            self.waiters(),
            self.watchers(),
            self.owners(),
            self.throughput(),
            self.cron(),
            self.events(),
        ]
    }

    /// The idempotency key for a user-given unique key.
    pub fn unique(&self, unique_key: &str) -> String {
        self.key(&format!("unique:{unique_key}"))
    }

    /// ZSCAN pattern matching the member of job `id` in a member-keyed sorted set (members
    /// start with two hex digits of priority, then the id).
    pub fn member_pattern(id: &str) -> String {
        format!("??{}*", glob_escape(id))
    }

    /// SCAN pattern matching every idempotency key of this queue and of no other (the queue
    /// name is glob-escaped: a queue named `*` matches only its own keys).
    pub fn unique_pattern(&self) -> String {
        format!("{}:unique:*", glob_escape(&self.prefix))
    }

    /// SCAN pattern matching every metrics hash of this queue and of no other.
    pub fn metrics_pattern(&self) -> String {
        format!("{}:metrics:*", glob_escape(&self.prefix))
    }
}

/// Percent-escapes what would break a key's layout or a pattern: `%` itself, the separator
/// `:`, the hash-tag braces, glob characters (`* ? [ ] \`), whitespace and control characters.
/// Injective (an escaped string decodes to exactly one input), and the identity on plain names.
pub fn escape(part: &str) -> std::borrow::Cow<'_, str> {
    let special = |c: char| {
        matches!(c, '%' | ':' | '{' | '}' | '*' | '?' | '[' | ']' | '\\')
            || c.is_whitespace()
            || c.is_control()
    };
    if !part.contains(special) {
        return std::borrow::Cow::Borrowed(part);
    }
    let mut out = String::with_capacity(part.len() + 8);
    for c in part.chars() {
        if special(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Escapes the glob characters of a literal key prefix for SCAN MATCH and PSUBSCRIBE.
pub(crate) fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The slot tag of a user's sessions: four hex digits of the CRC16 of the name. Every session
/// id of the user starts with it, so the sessions and the user's index share one slot
/// (creating, rotating and ending a session is one script on both).
pub fn session_tag(user: &str) -> String {
    format!("{:04x}", crc16(user.as_bytes()))
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn hash_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % 16384
}

/// The part of `key` Redis Cluster hashes.
fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum of Redis Cluster's key slots.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Keys of the cache (toolkit): `<namespace>:cache:{<cache namespace>}:...`, so a cache
/// namespace's entries, locks and version share one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKeys {
    prefix: String,
}

impl CacheKeys {
    /// The cache keys of `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace.
    pub fn new(namespace: &str) -> Result<CacheKeys> {
        validate_namespace(namespace)?;
        Ok(CacheKeys::of_valid(namespace))
    }
    /// For a namespace already validated (a connected client's).
    pub(crate) fn of_valid(namespace: &str) -> CacheKeys {
        CacheKeys {
            prefix: format!("{namespace}:cache"),
        }
    }
    /// String holding one cached value.
    pub fn entry(&self, ns: &str, key: &str) -> String {
        format!("{}:{{{}}}:v:{}", self.prefix, escape(ns), escape(key))
    }
    /// The fill lock of one key (single flight across processes).
    pub fn lock(&self, ns: &str, key: &str) -> String {
        format!("{}:{{{}}}:lock:{}", self.prefix, escape(ns), escape(key))
    }
    /// The version counter of a cache namespace (bumped to invalidate all of it).
    pub fn version(&self, ns: &str) -> String {
        format!("{}:{{{}}}:version", self.prefix, escape(ns))
    }
    /// Set of the entries carrying a tag.
    pub fn tag(&self, tag: &str) -> String {
        format!("{}:tag:{}", self.prefix, escape(tag))
    }
    /// Hash of hit/miss/load counters per policy.
    pub fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }
}

/// Keys of the rate limiter (toolkit): `<namespace>:rl:{<subject>}:...`, so all limits of one
/// subject are checked by one script in one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitKeys {
    namespace: String,
}

impl RateLimitKeys {
    /// The rate-limit keys of `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace.
    pub fn new(namespace: &str) -> Result<RateLimitKeys> {
        validate_namespace(namespace)?;
        Ok(RateLimitKeys::of_valid(namespace))
    }
    /// For a namespace already validated (a connected client's).
    pub(crate) fn of_valid(namespace: &str) -> RateLimitKeys {
        RateLimitKeys {
            namespace: namespace.to_string(),
        }
    }
    /// The push-back block of a subject (an upstream asked us to wait).
    pub fn block(&self, subject: &str) -> String {
        format!("{}:rl:{{{}}}:block", self.namespace, escape(subject))
    }
    /// The counter or log of one limit of a subject.
    pub fn limit(&self, subject: &str, limit: &str) -> String {
        format!(
            "{}:rl:{{{}}}:l:{}",
            self.namespace,
            escape(subject),
            escape(limit)
        )
    }
    /// Hash of allowed/rejected counters per limit.
    pub fn stats(&self) -> String {
        format!("{}:ratelimit:stats", self.namespace)
    }
}

/// Keys shared by all queues of a namespace. They hold indexes for operators (which queues and
/// workers exist), never job state, so they need no hash tag of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceKeys {
    namespace: String,
}

impl NamespaceKeys {
    /// The keys of `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace.
    pub fn new(namespace: &str) -> Result<NamespaceKeys> {
        validate_namespace(namespace)?;
        Ok(NamespaceKeys::of_valid(namespace))
    }
    /// For a namespace already validated (a connected client's).
    pub(crate) fn of_valid(namespace: &str) -> NamespaceKeys {
        NamespaceKeys {
            namespace: namespace.to_string(),
        }
    }
    /// Set of queue names producers and workers have used.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.namespace)
    }
    /// Hash of sharded queues: queue name -> shard count (see [`shard_name`]).
    pub fn shards(&self) -> String {
        format!("{}:shards", self.namespace)
    }
    /// Hash of cron schedule definitions: name -> JSON (what `queue cron ls` shows).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.namespace)
    }
    /// Hash of one session, named by the SHA-256 of its id (hex): the id itself is never
    /// stored. `tag` is the id's slot tag (its first four hex digits: a user's sessions all
    /// carry [`session_tag`] of the user), so a session and its user's index share a slot.
    pub fn session(&self, tag: &str, id_hash: &str) -> String {
        format!("{}:session:{{{}}}:{id_hash}", self.namespace, escape(tag))
    }
    /// Set of the session hashes of one user ("log out everywhere"), in the slot of the
    /// user's sessions.
    pub fn user_sessions(&self, user: &str) -> String {
        format!(
            "{}:session:{{{}}}:user:{}",
            self.namespace,
            session_tag(user),
            escape(user)
        )
    }
    /// Pattern matching every user index (for the maintenance task's SCAN).
    pub fn user_sessions_pattern(&self) -> String {
        format!("{}:session:{{*}}:user:*", glob_escape(&self.namespace))
    }
    /// String of one `tower-sessions` record, named by the SHA-256 of its id (hex).
    pub fn tower_session(&self, id_hash: &str) -> String {
        format!("{}:session:tower:{id_hash}", self.namespace)
    }
    /// Pattern matching every session key of the namespace (benchmark clean-up).
    pub fn sessions_pattern(&self) -> String {
        format!("{}:session:*", glob_escape(&self.namespace))
    }
    /// Prefix of event bus channels: `<namespace>:events:<channel>`.
    pub fn event_channel(&self, channel: &str) -> String {
        format!("{}:events:{channel}", self.namespace)
    }
    /// Pub/sub pattern for a user's channel pattern (a glob on purpose); the namespace part is
    /// escaped so it matches literally.
    pub fn event_pattern(&self, pattern: &str) -> String {
        format!("{}:events:{pattern}", glob_escape(&self.namespace))
    }
    /// Sorted set of worker ids (score = last heartbeat, ms).
    pub fn workers(&self) -> String {
        format!("{}:workers", self.namespace)
    }
    /// Hash describing one worker (host, pid, queues, concurrency, in-flight...).
    pub fn worker(&self, id: &str) -> String {
        format!("{}:worker:{id}", self.namespace)
    }
}

/// A namespace is a name without `:` as well: every key starts `<namespace>:`, so a namespace
/// holding `:` would be the start of another namespace's key space (`a:cache` against `a`'s
/// cache keys), and a `~<namespace>:*` ACL rule could not tell them apart.
fn validate_namespace(namespace: &str) -> Result<()> {
    validate_name("namespace", namespace)?;
    if namespace.contains(':') {
        return Err(Error::Config(format!(
            "namespace {namespace:?} must not contain ':'"
        )));
    }
    Ok(())
}

/// The most shards a queue may be split in.
pub const MAX_SHARDS: u16 = 64;

/// The name of shard `i` (from 0) of `queue` split in `n` shards: `<queue>{<i>.<k>`.
///
/// A user's queue name never holds a `{`, so no shard name is ever a user's queue. In a key,
/// the shard's name is the hash tag (`<ns>:{<queue>{<i>.<k>}:...`), and `k` is the smallest
/// number that puts the tag's slot in the middle half of the `i`-th of `n` equal parts of the
/// slot space: on a cluster whose slots are split evenly over `n` masters (as `redis-cli
/// --cluster create` does), each shard is on another master, whatever the queue's name.
///
/// # Panics
///
/// Never for `n` within [`MAX_SHARDS`] and `i < n`: a fitting `k` exists among the first few
/// thousand (each try fits with probability `1/(2n)`).
pub fn shard_name(queue: &str, i: u16, n: u16) -> String {
    let n = u32::from(n.clamp(1, MAX_SHARDS));
    let part = 16384 / n;
    let (lo, hi) = (
        u32::from(i) * part + part / 4,
        u32::from(i) * part + 3 * part / 4,
    );
    let mut k = 0u32;
    loop {
        let name = format!("{queue}{{{i}.{k}");
        let slot = u32::from(hash_slot(format!("{{{name}}}").as_bytes()));
        if (lo..hi).contains(&slot) || k > 1_000_000 {
            return name;
        }
        k += 1;
    }
}

/// The shard (of `n`) that jobs with shard key `key` go to: the key's CRC16, so every producer,
/// in any language, sends a key's jobs to the same shard.
pub fn shard_for_key(key: &str, n: u16) -> u16 {
    crc16(key.as_bytes()) % n.max(1)
}

/// The queue and shard index a shard name ([`shard_name`]) belongs to; `None` for a plain
/// queue name.
pub fn shard_of(name: &str) -> Option<(&str, u16)> {
    let (queue, suffix) = name.split_once('{')?;
    let (i, k) = suffix.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 7 && s.bytes().all(|b| b.is_ascii_digit());
    if queue.is_empty() || !digits(i) || !digits(k) {
        return None;
    }
    Some((queue, i.parse().ok()?))
}

fn validate_name(what: &str, name: &str) -> Result<()> {
    // A shard's name is its queue's with a suffix only `shard_name` writes.
    if what == "queue name" {
        if let Some((queue, _)) = shard_of(name) {
            return validate_name(what, queue);
        }
    }
    if name.is_empty() {
        return Err(Error::Config(format!("{what} must not be empty")));
    }
    if name.len() > MAX_QUEUE_NAME {
        return Err(Error::Config(format!(
            "{what} {name:?} is longer than {MAX_QUEUE_NAME} bytes"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '{' | '}') || c.is_whitespace() || c.is_control())
    {
        return Err(Error::Config(format!(
            "{what} {name:?} must not contain {c:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_over_the_slot_space_and_are_never_a_users_queue() {
        for queue in ["emails", "a", "x:y", "ünïcode"] {
            for n in [2u16, 3, 5, 16] {
                let mut parts = std::collections::HashSet::new();
                for i in 0..n {
                    let name = shard_name(queue, i, n);
                    assert_eq!(shard_of(&name), Some((queue, i)), "{name}");
                    assert!(QueueKeys::new("ns", &name).is_ok(), "{name}");
                    let keys = QueueKeys::new("ns", &name).expect("keys");
                    let slot = hash_slot(keys.pending().as_bytes());
                    assert_eq!(slot, hash_slot(keys.wake().as_bytes()));
                    // In the middle half of its part: on its own master of an even split.
                    let part = 16384 / u32::from(n);
                    let at = u32::from(slot) % part;
                    assert_eq!(u32::from(slot) / part, u32::from(i), "{name}");
                    assert!((part / 4..3 * part / 4).contains(&at), "{name}: {slot}");
                    parts.insert(u32::from(slot) / part);
                }
                assert_eq!(parts.len(), usize::from(n));
            }
        }
        assert_eq!(shard_of("emails"), None);
        assert_eq!(shard_of("emails{x.1"), None);
        assert!(QueueKeys::new("ns", "emails{1").is_err());
        assert!(QueueKeys::new("ns", "{0.1").is_err());
    }

    #[test]
    fn hash_slots_are_redis_clusters() {
        // The Redis Cluster specification's examples, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(
            hash_slot(b"{user1000}.following"),
            hash_slot(b"{user1000}.followers")
        );
        // An empty tag hashes the whole key; the tag ends at the first `}` after the first `{`.
        assert_eq!(super::hash_tag(b"foo{}{bar}"), b"foo{}{bar}".as_slice());
        assert_eq!(super::hash_tag(b"foo{{bar}}zap"), b"{bar".as_slice());
        assert_eq!(super::hash_tag(b"foo{bar}{zap}"), b"bar".as_slice());
        assert_eq!(super::hash_tag(b"no tag"), b"no tag".as_slice());
    }

    /// Every key builder whose keys a script takes together gives keys of one slot: a queue's
    /// keys, a cache namespace's, a rate-limit subject's, and a user's sessions with the
    /// user's index. (Every script call is also checked in debug builds: `script.rs`.)
    #[test]
    fn keys_a_script_takes_together_share_a_slot() {
        let same = |keys: &[String]| {
            let slots: std::collections::BTreeSet<u16> =
                keys.iter().map(|k| hash_slot(k.as_bytes())).collect();
            assert_eq!(slots.len(), 1, "{keys:?}");
        };
        for name in ["emails", "a{b}c", "}{", "queue", "x:y", ""] {
            let Ok(q) = QueueKeys::new("ns", name) else {
                continue;
            };
            let mut keys = q.all_fixed();
            keys.extend([
                q.metrics(29_000_000),
                q.metrics_hour(480_000),
                q.unique("order-{7}"),
                q.alive_channel("w{1}", 3),
            ]);
            same(&keys);
        }
        let c = CacheKeys::new("ns").expect("ns");
        for ns in ["users", "a}b{c"] {
            same(&[c.entry(ns, "k1"), c.lock(ns, "k{2}"), c.version(ns)]);
        }
        let r = RateLimitKeys::new("ns").expect("ns");
        for subject in ["ip:1.2.3.4", "{x}"] {
            same(&[
                r.block(subject),
                r.limit(subject, "a"),
                r.limit(subject, "b{c}"),
            ]);
        }
        let n = NamespaceKeys::new("ns").expect("ns");
        for user in ["zoe", "ada@example.com", "{weird}user", ""] {
            let tag = session_tag(user);
            same(&[
                n.user_sessions(user),
                n.session(&tag, &"a".repeat(64)),
                n.session(&tag, &"b".repeat(64)),
            ]);
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = QueueKeys::new("queue", "emails").expect("valid");
        for key in [
            k.pending(),
            k.scheduled(),
            k.active(),
            k.inflight(),
            k.dead(),
            k.unique("x:y"),
        ] {
            assert!(key.starts_with("queue:{emails}:"), "{key}");
        }
    }

    #[test]
    fn escaping_is_injective_and_keeps_plain_names() {
        assert_eq!(escape("products"), "products");
        assert_eq!(escape("a:b"), "a%3Ab");
        assert_eq!(escape("50%"), "50%25");
        // Inputs that a lossy replacement would merge stay apart.
        let hostile = [
            "a:b", "a%3Ab", "a{b}", "a_b_", "*", "?", "[x]", "a b", "lock:x", "x",
        ];
        let escaped: std::collections::HashSet<String> =
            hostile.iter().map(|h| escape(h).into_owned()).collect();
        assert_eq!(escaped.len(), hostile.len());
        for e in &escaped {
            assert!(!e.contains([':', '{', '}', '*', '?', '[', ']', ' ']), "{e}");
        }
    }

    #[test]
    fn hostile_names_cannot_cross_keys() {
        let c = CacheKeys::new("queue").expect("valid");
        // An entry whose key looks like a lock never names the lock of another key.
        assert_ne!(c.entry("p", "lock:x"), c.lock("p", "x"));
        assert_ne!(c.entry("a:b", "c"), c.entry("a", "b:c"));
        let r = RateLimitKeys::new("queue").expect("valid");
        assert_ne!(r.limit("a}:{b", "x"), r.limit("a", "x"));
        assert_ne!(r.block("x"), r.limit("x", "block"));
        for key in [c.entry("{p}", "k"), r.block("{user}")] {
            assert_eq!(key.matches('{').count(), 1, "{key}");
        }
        // Every builder with a free-form part keeps distinct inputs apart and its hash tag whole.
        let q = QueueKeys::new("queue", "q").expect("valid");
        let ns = NamespaceKeys::new("queue").expect("valid");
        let hostile = ["a", "a:b", "a}b", "{x}", "*", "a b", "%3A", ":", ""];
        for (i, a) in hostile.iter().enumerate() {
            for b in &hostile[i + 1..] {
                assert_ne!(q.unique(a), q.unique(b));
                assert_ne!(ns.user_sessions(a), ns.user_sessions(b));
                assert_ne!(ns.event_channel(a), ns.event_channel(b));
                assert_ne!(ns.worker(a), ns.worker(b));
                assert_ne!(c.tag(a), c.tag(b));
                assert_ne!(c.version(a), c.version(b));
                assert_ne!(c.lock(a, "k"), c.lock(b, "k"));
                assert_ne!(r.block(a), r.block(b));
                assert_ne!(r.limit("s", a), r.limit("s", b));
            }
        }
        // Glob characters in an id reach a pattern escaped.
        assert_eq!(QueueKeys::member_pattern("a*"), "??a\\**");
        // A queue named `*` scans only its own idempotency keys.
        let star = QueueKeys::new("queue", "*").expect("valid");
        assert_eq!(star.unique_pattern(), "queue:{\\*}:unique:*");
        assert_eq!(star.metrics_pattern(), "queue:{\\*}:metrics:*");
    }

    /// The hash tag Redis Cluster hashes a key by: the bytes between the first `{` and the
    /// first `}` after it, when that is not empty; otherwise the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(len) = key[open + 1..].find('}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    /// Target 1 of the hostile-input issue: tricky inputs through every builder that takes a
    /// user string give pairwise distinct keys, and every key of a queue (its free-form ones
    /// included) hashes by the queue's tag, so every script stays in one slot.
    #[test]
    fn tricky_inputs_give_distinct_keys_in_their_queues_slot() {
        let long = "x".repeat(10 * 1024);
        let tricky: Vec<&str> = vec![
            "", "{", "}", ":", "*", "?", "[", "]", "\\", "\n", "a\nb", "%", "%3A", "a:b", "a%3Ab",
            "{x}", "a b", "block", "version", "lock", "v:", "l:x", &long,
        ];
        let c = CacheKeys::new("queue").expect("valid");
        let r = RateLimitKeys::new("queue").expect("valid");
        let ns = NamespaceKeys::new("queue").expect("valid");
        for queue in ["q", "*", "a:b", "[x]", "?"] {
            let q = QueueKeys::new("queue", queue).expect("valid queue name");
            let tag = hash_tag(&q.pending()).to_string();
            assert_eq!(tag, queue);
            let mut all: Vec<String> = q.all_fixed();
            all.push(q.metrics(29_000_000));
            all.push(q.metrics_hour(480_000));
            for t in &tricky {
                all.push(q.unique(t));
                all.push(q.alive_channel(t, 1));
            }
            for key in &all {
                assert_eq!(hash_tag(key), tag, "{key:?} leaves the slot of {queue:?}");
            }
        }
        let q = QueueKeys::new("queue", "q").expect("valid");
        type Builder<'a> = (&'a str, Box<dyn Fn(&str) -> String + 'a>);
        let builders: Vec<Builder<'_>> = vec![
            ("unique", Box::new(|s| q.unique(s))),
            ("alive_channel", Box::new(|s| q.alive_channel(s, 7))),
            ("cache entry (namespace)", Box::new(|s| c.entry(s, "k"))),
            ("cache entry (key)", Box::new(|s| c.entry("n", s))),
            ("cache lock (namespace)", Box::new(|s| c.lock(s, "k"))),
            ("cache lock (key)", Box::new(|s| c.lock("n", s))),
            ("cache version", Box::new(|s| c.version(s))),
            ("cache tag", Box::new(|s| c.tag(s))),
            ("rate-limit block", Box::new(|s| r.block(s))),
            ("rate-limit limit (subject)", Box::new(|s| r.limit(s, "l"))),
            ("rate-limit limit (name)", Box::new(|s| r.limit("s", s))),
            // The id hash is always our own hex; the tag is what could come from outside.
            ("session", Box::new(|s| ns.session(s, &"0".repeat(64)))),
            ("user sessions", Box::new(|s| ns.user_sessions(s))),
            ("tower session", Box::new(|s| ns.tower_session(s))),
            ("event channel", Box::new(|s| ns.event_channel(s))),
            ("worker", Box::new(|s| ns.worker(s))),
        ];
        // Distinct inputs, distinct keys, within each builder...
        for (what, build) in &builders {
            let keys: std::collections::HashSet<String> = tricky.iter().map(|t| build(t)).collect();
            assert_eq!(keys.len(), tricky.len(), "{what}: two inputs share a key");
        }
        // ... and no key of one builder is a key of another (reserved words cannot collide).
        let mut seen: std::collections::HashMap<String, &str> = Default::default();
        for (what, build) in &builders {
            for t in &tricky {
                if let Some(other) = seen.insert(build(t), what) {
                    assert_eq!(other, *what, "{what} and {other} both build {:?}", build(t));
                }
            }
        }
        // Toolkit keys carry no brace of their own input: one hash tag at most, the builder's.
        for t in &tricky {
            for key in [c.entry(t, t), r.limit(t, t), r.block(t)] {
                assert!(key.matches('{').count() <= 1, "{key:?}");
            }
        }
    }

    #[test]
    fn a_namespace_cannot_hold_a_separator() {
        assert!(QueueKeys::new("a:b", "q").is_err());
        assert!(CacheKeys::new("a:cache").is_err());
        assert!(NamespaceKeys::new("ns:session:user").is_err());
        assert!(RateLimitKeys::new("x:y").is_err());
        assert!(QueueKeys::new("app-1.prod", "q").is_ok());
    }

    #[test]
    fn rejects_names_that_break_the_layout() {
        assert!(QueueKeys::new("queue", "").is_err());
        assert!(QueueKeys::new("queue", "a{b").is_err());
        assert!(QueueKeys::new("queue", "a b").is_err());
        assert!(QueueKeys::new("", "a").is_err());
        assert!(QueueKeys::new("queue", &"x".repeat(200)).is_err());
    }
}
