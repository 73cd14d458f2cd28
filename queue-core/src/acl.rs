//! The least-privilege Redis users of `docs/OPERATIONS.md`, as data: what a producer, a worker
//! and an operator of one namespace may run, for `ACL SETUSER` (`queue acl` prints them).
//!
//! Scripts run their commands under their caller's ACL, so the producer's and the worker's
//! lists name what the scripts use as well as what the clients send. None of the three needs a
//! `@dangerous` command but the operator's `INFO` (server figures in `stats` and `health`); a
//! producer or worker without `INFO` connects with a warning that the version and eviction
//! checks were skipped.

use crate::error::Result;
use crate::keys::{glob_escape, NamespaceKeys};

/// Every producer and worker connection, and what the scripts run inside Redis.
const COMMON: &str = "-@all +ping +script|load +evalsha +time \
    +get +set +del +exists +pexpire +pttl +rename \
    +hget +hset +hmget +hdel +hexists +hgetall +hkeys +hincrby \
    +zadd +zrem +zcard +zscore +zmscore +zrange +zrangebyscore +zrangebylex +zpopmin \
    +zremrangebyrank +zremrangebyscore +zremrangebylex \
    +sadd +srem +rpush +llen +xadd +publish +pubsub|numsub +wait";

/// What [`Durability::Fsync`](crate::Durability::Fsync) adds to a producer and a worker:
/// `WAITAOF` exists from Redis 7.2 on, and older servers refuse a rule that names it, so it is
/// not in [`COMMON`]; `queue acl --fsync` appends it.
pub const FSYNC: &str = "+waitaof";

/// What every role adds on a Redis Cluster: the slot map (`CLUSTER SLOTS`, read by the client
/// at connect and after a `MOVED`, and for the masters of walks over keys and of the server's
/// facts) and `ASKING` (following a slot being migrated). `queue acl --cluster` appends it.
pub const CLUSTER: &str = "+cluster|slots +asking";

/// A producer beyond [`COMMON`]: awaiting outcomes, event subscriptions.
/// (`WAIT`, in [`COMMON`], is the replicated durability of enqueues and settlements.)
const PRODUCER: &str = "+subscribe +unsubscribe";

/// A worker beyond [`COMMON`]: what a producer does, and the wake-up, the liveness
/// subscription, its record and maintenance.
const WORKER: &str = "+subscribe +unsubscribe +psubscribe +punsubscribe +blpop +hmset \
    +hsetnx +smembers +scan +zscan +unlink";

/// An operator (the CLI, the dashboard): reads everything of its namespace, changes jobs.
/// `TIME` is in no category but `@fast`; the enqueue and job-changing scripts read the clock.
const OPERATOR: &str =
    "-@all +@read +@write +@scripting +@pubsub +@connection -@dangerous +info +time";

/// Who connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Enqueues jobs and awaits their outcomes (any service of the application).
    Producer,
    /// Runs jobs (`queue-worker` processes).
    Worker,
    /// Inspects and changes queues and jobs (the `queue` CLI, the dashboard).
    Operator,
}

impl Role {
    /// The three roles, in the order the docs list them.
    pub const ALL: [Role; 3] = [Role::Producer, Role::Worker, Role::Operator];

    /// `producer`, `worker` or `operator`: the user name the docs give it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Operator => "operator",
        }
    }

    /// The role named `name` (as [`Role::name`] spells it).
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// What the role adds for [`Durability::Fsync`](crate::Durability::Fsync): [`FSYNC`] for a
    /// producer and a worker, nothing for the operator (its `@connection` holds `WAITAOF`).
    pub fn fsync_commands(self) -> &'static str {
        match self {
            Role::Producer | Role::Worker => FSYNC,
            Role::Operator => "",
        }
    }

    /// The command rules of the role (no key or channel rules).
    pub fn commands(self) -> String {
        match self {
            Role::Producer => format!("{COMMON} {PRODUCER}"),
            Role::Worker => format!("{COMMON} {WORKER}"),
            Role::Operator => OPERATOR.to_string(),
        }
    }
}

/// The key and channel rules of a namespace's users: `~<namespace>:* &<namespace>:*` (the
/// namespace's glob characters escaped).
///
/// Redis checks a pattern subscription (`PSUBSCRIBE`, an event-bus subscription with a glob)
/// against these rules literally: a subscriber of `orders.*` needs `&<namespace>:events:orders.*`
/// as a rule of its own. Exact channels (awaiting a job, lifecycle events, the cache's
/// invalidations, a bus subscription without a glob) are covered by `&<namespace>:*`.
///
/// # Errors
///
/// [`Error::Config`](crate::Error::Config) for an invalid namespace.
pub fn scope(namespace: &str) -> Result<String> {
    NamespaceKeys::new(namespace)?;
    let ns = glob_escape(namespace);
    Ok(format!("~{ns}:* &{ns}:*"))
}

/// Every rule of `role` for `namespace`: [`scope`], then [`Role::commands`].
///
/// # Errors
///
/// As [`scope`].
pub fn rules(role: Role, namespace: &str) -> Result<String> {
    Ok(format!("{} {}", scope(namespace)?, role.commands()))
}

/// The three roles at once (one process that produces, works and operates, as the test suite's
/// client does): the operator's categories, then the producer's and the worker's commands.
///
/// # Errors
///
/// As [`scope`].
pub fn union_rules(namespace: &str) -> Result<String> {
    Ok(format!(
        "{} {OPERATOR} {} {PRODUCER} {WORKER}",
        scope(namespace)?,
        COMMON.trim_start_matches("-@all ")
    ))
}

/// The `ACL SETUSER` command that creates `user` as `role` of `namespace`, with the password
/// left as `>PASSWORD` for the operator to fill in.
///
/// # Errors
///
/// As [`scope`].
pub fn setuser(role: Role, user: &str, namespace: &str) -> Result<String> {
    Ok(format!(
        "ACL SETUSER {user} reset on >PASSWORD {}",
        rules(role, namespace)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_is_scoped_to_its_namespace_and_refuses_dangerous_commands() {
        for role in Role::ALL {
            let r = rules(role, "shop").expect("rules");
            assert!(r.starts_with("~shop:* &shop:* -@all "), "{r}");
            assert_eq!(Role::parse(role.name()), Some(role));
            for dangerous in [
                "+@all",
                "+flushall",
                "+keys",
                "+config",
                "+debug",
                "+monitor",
            ] {
                assert!(!r.split(' ').any(|w| w == dangerous), "{role:?}: {r}");
            }
        }
        assert!(scope("a:b").is_err(), "a namespace with ':' is refused");
        assert_eq!(scope("we*rd").expect("scope"), r"~we\*rd:* &we\*rd:*");
    }

    #[test]
    fn the_union_holds_every_command_of_each_role() {
        let union = union_rules("queue").expect("union");
        let words: Vec<&str> = union.split(' ').collect();
        assert_eq!(
            words.iter().filter(|w| **w == "-@all").count(),
            1,
            "{union}"
        );
        for role in [Role::Producer, Role::Worker] {
            for c in role.commands().split_whitespace().skip(1) {
                assert!(words.contains(&c), "{c} missing from {union}");
            }
        }
    }

    /// `docs/OPERATIONS.md` shows the three users; each user's commands there are the ones
    /// `queue acl` prints for it.
    #[test]
    fn the_operations_guide_lists_the_same_commands_per_user() {
        use std::collections::{BTreeMap, BTreeSet};
        let doc = include_str!("../../docs/OPERATIONS.md");
        let section = doc
            .split("## ACL users")
            .nth(1)
            .and_then(|s| s.split("```").nth(1))
            .expect("the ACL block of OPERATIONS.md");
        // `COMMON = ...` and `ACL SETUSER <user> ...` open a list; indented lines continue it.
        let mut lists: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in section.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                current = None;
                continue;
            }
            let words: Vec<&str> = t.split_whitespace().collect();
            if let Some(rest) = t.strip_prefix("COMMON =") {
                current = Some("COMMON".into());
                lists
                    .entry("COMMON".into())
                    .or_default()
                    .extend(rest.split_whitespace());
            } else if t.starts_with("ACL SETUSER") {
                let user = words[2].to_string();
                lists.entry(user.clone()).or_default().extend(&words[3..]);
                current = Some(user);
            } else if line.starts_with(' ') {
                let user = current.clone().expect("a continuation line follows a list");
                lists.entry(user).or_default().extend(&words);
            }
        }
        let common: Vec<&str> = lists.get("COMMON").cloned().unwrap_or_default();
        for role in Role::ALL {
            let documented: BTreeSet<&str> = lists
                .get(role.name())
                .unwrap_or_else(|| panic!("no {} user in OPERATIONS.md", role.name()))
                .iter()
                .flat_map(|w| {
                    if *w == "COMMON" {
                        common.clone()
                    } else {
                        vec![*w]
                    }
                })
                .filter(|w| w.starts_with('+') || w.starts_with('-'))
                .collect();
            let code = role.commands();
            let ours: BTreeSet<&str> = code.split_whitespace().collect();
            assert_eq!(
                documented, ours,
                "docs/OPERATIONS.md and queue::acl disagree on {role:?}"
            );
        }
        assert!(
            section.contains(&format!("append {FSYNC}")),
            "the block says what fsync durability adds"
        );
        assert!(
            section.contains(&format!("append {CLUSTER} to every user")),
            "the block says what a cluster adds"
        );
    }
}
