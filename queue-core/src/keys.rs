//! The only place that builds Redis key names.
//!
//! Every key of a queue is `<namespace>:{<queue>}:<suffix>`: the braces are a Redis Cluster hash
//! tag, so all keys one script touches live in one slot and no script needs rewriting for Cluster.

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
        validate_name("namespace", namespace)?;
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
    /// Hash of throughput counters: a ring of 360 ten-second buckets (`t:<slot>` bucket number,
    /// `c:<slot>` completed, `f:<slot>` failed attempts), so it never grows.
    pub fn throughput(&self) -> String {
        self.key("throughput")
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
    /// Every key of the queue except the idempotency keys (which live under
    /// `<namespace>:{<queue>}:unique:*`).
    pub fn all_fixed(&self) -> Vec<String> {
        vec![
            self.pending(),
            self.scheduled(),
            self.retry(),
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
            self.throughput(),
            self.cron(),
            self.events(),
        ]
    }

    /// The idempotency key for a user-given unique key.
    pub fn unique(&self, unique_key: &str) -> String {
        self.key(&format!("unique:{unique_key}"))
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
        validate_name("namespace", namespace)?;
        Ok(NamespaceKeys {
            namespace: namespace.to_string(),
        })
    }
    /// Set of queue names producers and workers have used.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.namespace)
    }
    /// Hash of cron schedule definitions: name -> JSON (what `queue cron ls` shows).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.namespace)
    }
    /// Hash of one session, named by the SHA-256 of its id (hex): the id itself is never stored.
    pub fn session(&self, id_hash: &str) -> String {
        format!("{}:session:{id_hash}", self.namespace)
    }
    /// Set of the session hashes of one user ("log out everywhere").
    pub fn user_sessions(&self, user: &str) -> String {
        format!("{}:session:user:{user}", self.namespace)
    }
    /// Pattern matching every user index (for the maintenance task's SCAN).
    pub fn user_sessions_pattern(&self) -> String {
        format!("{}:session:user:*", self.namespace)
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

fn validate_name(what: &str, name: &str) -> Result<()> {
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
    fn rejects_names_that_break_the_layout() {
        assert!(QueueKeys::new("queue", "").is_err());
        assert!(QueueKeys::new("queue", "a{b").is_err());
        assert!(QueueKeys::new("queue", "a b").is_err());
        assert!(QueueKeys::new("", "a").is_err());
        assert!(QueueKeys::new("queue", &"x".repeat(200)).is_err());
    }
}
