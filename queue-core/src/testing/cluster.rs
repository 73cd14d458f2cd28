//! A throwaway Redis Cluster: masters and their replicas, each a real `redis-server` in cluster
//! mode on a free loopback port, joined with `redis-cli --cluster create`, killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{RedisServer, RedisServerOptions};
use crate::error::{Error, Result};

/// How to start a [`RedisCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many masters (at least 3, as `redis-cli --cluster create` asks).
    pub masters: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// `cluster-node-timeout`: how long a node may not answer before it is failed over.
    pub node_timeout: Duration,
    /// Options of every node; cluster mode is added.
    pub server: RedisServerOptions,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            masters: 3,
            replicas: 1,
            node_timeout: Duration::from_millis(2000),
            server: RedisServerOptions::default(),
        }
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster (slots spread evenly over the masters) and waits
    /// until every node says the cluster is `ok`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when a node does not start, `redis-cli` is missing or the cluster does
    /// not settle in time (with what `redis-cli` said).
    pub fn start(opts: ClusterOptions) -> Result<RedisCluster> {
        let spawn_err = |message: String| Error::Spawn {
            what: "redis cluster",
            message,
        };
        if opts.masters < 3 {
            return Err(spawn_err("a cluster needs at least 3 masters".into()));
        }
        let mut nodes = Vec::new();
        for _ in 0..opts.masters * (1 + opts.replicas) {
            let mut o = opts.server.clone();
            o.args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &opts.node_timeout.as_millis().to_string(),
                ]
                .map(String::from),
            );
            nodes.push(RedisServer::start_with(o)?);
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        for n in &nodes {
            let port = n
                .port()
                .ok_or_else(|| spawn_err("cluster nodes listen on TCP".into()))?;
            args.push(format!("127.0.0.1:{port}"));
        }
        args.extend(
            [
                "--cluster-replicas",
                &opts.replicas.to_string(),
                "--cluster-yes",
            ]
            .map(String::from),
        );
        if let Some(password) = &opts.server.password {
            args.extend([
                "-a".to_string(),
                password.clone(),
                "--no-auth-warning".into(),
            ]);
        }
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| spawn_err(format!("redis-cli (apt-get install redis-tools): {e}")))?;
        if !out.status.success() {
            return Err(spawn_err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Settled: every node says `ok`, and the replicas are replicas (they start as empty
        // masters and take their role a moment after the create).
        let settled = |c: &RedisCluster| {
            c.nodes.iter().all(cluster_ok)
                && c.table().is_ok_and(|t| {
                    t.iter().filter(|n| n.master.is_some()).count() == opts.masters * opts.replicas
                })
        };
        while !settled(&cluster) {
            if Instant::now() > deadline {
                return Err(spawn_err(
                    "the cluster did not reach cluster_state:ok within 60 s".into(),
                ));
            }
            // Only polling shows the cluster's state; the wait is bounded.
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// The nodes, masters first (as they were given to `redis-cli --cluster create`).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes' URLs, the seed list of a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_string()).collect()
    }

    /// The `redis+cluster://` URL that lists every node as a seed (without credentials, as
    /// [`RedisServer::url`]).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.port().map(|p| format!("127.0.0.1:{p}")))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The index of the node that is master of `slot` now, as node 0 sees it (or the first
    /// node that answers).
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when no node answers or none serves the slot.
    pub fn master_of(&self, slot: u16) -> Result<usize> {
        let table = self.table()?;
        table
            .iter()
            .find(|n| n.master.is_none() && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|n| n.index)
            .ok_or_else(|| spawn_err(format!("no master serves slot {slot}")))
    }

    /// Fails over the master of `slot` with `CLUSTER FAILOVER` on one of its replicas, and
    /// waits until that replica is master, the old master its replica, and every node says
    /// the cluster is `ok`.
    ///
    /// The replica is asked once its replication link is up and synced. A manual failover
    /// the master does not complete within 5 s is abandoned by Redis (seen when the replica's
    /// link drops at the request and it must sync in full): it is asked again, and
    /// [`Failover::asked_at`] is the last request's time.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the master has no replica or the failover does not complete
    /// within 30 s.
    pub fn failover(&self, slot: u16) -> Result<Failover> {
        let table = self.table()?;
        let old = self.master_of(slot)?;
        let old_id = table
            .iter()
            .find(|n| n.index == old)
            .map(|n| n.id.clone())
            .ok_or_else(|| spawn_err("the master is not in the table".into()))?;
        let new = table
            .iter()
            .find(|n| n.master.as_deref() == Some(old_id.as_str()))
            .map(|n| n.index)
            .ok_or_else(|| spawn_err(format!("the master of slot {slot} has no replica")))?;
        let mut con = connect(&self.nodes[new])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        // A replica that is still syncing (the old master of the last failover, say) cannot
        // take over: wait for its link first.
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .map_err(|e| spawn_err(format!("INFO: {e}")))?;
            if info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(spawn_err(
                    "the link of the replica did not come up within 30 s".into(),
                ));
            }
            // Only polling shows the link; the wait is bounded.
            std::thread::sleep(Duration::from_millis(50));
        }
        let ask = |con: &mut redis::Connection| {
            redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query::<()>(con)
                .map_err(|e| spawn_err(format!("CLUSTER FAILOVER: {e}")))
        };
        ask(&mut con)?;
        // A manual failover the master does not join within 5 s is abandoned: asked again.
        let mut asked = Instant::now();
        let mut asks = 1;
        loop {
            let promoted = redis::cmd("ROLE")
                .query::<Vec<redis::Value>>(&mut con)
                .ok()
                .and_then(|r| r.into_iter().next())
                .is_some_and(|v| v == redis::Value::BulkString(b"master".to_vec()));
            // Done when the old master follows the new one too (it learns that a moment after
            // the promotion), so the next failover finds a replica.
            let demoted = || {
                self.table().is_ok_and(|t| {
                    let new_id = t.iter().find(|n| n.index == new).map(|n| n.id.clone());
                    t.iter()
                        .any(|n| n.index == old && n.master.is_some() && n.master == new_id)
                })
            };
            if promoted
                && self.master_of(slot).ok() == Some(new)
                && self.nodes.iter().all(cluster_ok)
                && demoted()
            {
                return Ok(Failover {
                    old,
                    new,
                    asked_at: asked,
                    asks,
                });
            }
            if Instant::now() > deadline {
                return Err(spawn_err(format!(
                    "the failover of slot {slot} did not complete within 30 s"
                )));
            }
            if !promoted && asked.elapsed() > Duration::from_secs(6) {
                ask(&mut con)?;
                asked = Instant::now();
                asks += 1;
            }
            // Only polling shows a failover's progress; the wait is bounded.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `slot` from its master to the master at index `to`, live: the slot is marked
    /// importing and migrating, its keys are moved with `MIGRATE` in batches (while clients
    /// keep writing: they are sent on with `ASK`, or told `TRYAGAIN` for a multi-key call
    /// that spans both nodes), then every node is told the new owner.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when a step fails or the keys do not move within 60 s.
    pub fn move_slot(&self, slot: u16, to: usize) -> Result<()> {
        let from = self.master_of(slot)?;
        if from == to {
            return Ok(());
        }
        let table = self.table()?;
        let id = |i: usize| {
            table
                .iter()
                .find(|n| n.index == i)
                .map(|n| n.id.clone())
                .ok_or_else(|| spawn_err(format!("node {i} is not in the table")))
        };
        let (from_id, to_id) = (id(from)?, id(to)?);
        let step = |what: &str, r: redis::RedisResult<()>| {
            r.map_err(|e| spawn_err(format!("{what}: {e}")))
        };
        let mut src = connect(&self.nodes[from])?;
        let mut dst = connect(&self.nodes[to])?;
        let setslot = |con: &mut redis::Connection, state: &str, node: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(node)
                .query::<()>(con)
        };
        step(
            "SETSLOT IMPORTING",
            setslot(&mut dst, "IMPORTING", &from_id),
        )?;
        step("SETSLOT MIGRATING", setslot(&mut src, "MIGRATING", &to_id))?;
        let port = self.nodes[to]
            .port()
            .ok_or_else(|| spawn_err("cluster nodes listen on TCP".into()))?;
        let password = self.nodes[to].admin_password();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .map_err(|e| spawn_err(format!("GETKEYSINSLOT: {e}")))?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate.arg("127.0.0.1").arg(port).arg("").arg(0).arg(5000);
            if let Some(password) = &password {
                migrate.arg("AUTH").arg(password);
            }
            migrate.arg("KEYS").arg(&keys);
            step("MIGRATE", migrate.query::<()>(&mut src))?;
            if Instant::now() > deadline {
                return Err(spawn_err(format!("slot {slot} did not empty within 60 s")));
            }
        }
        // The new owner first, then the old one; the others learn it from the cluster bus.
        step("SETSLOT NODE", setslot(&mut dst, "NODE", &to_id))?;
        step("SETSLOT NODE", setslot(&mut src, "NODE", &to_id))?;
        Ok(())
    }

    /// The cluster as the first node that answers sees it.
    fn table(&self) -> Result<Vec<NodeRow>> {
        let mut last = String::from("no node");
        for node in &self.nodes {
            let text = connect(node).and_then(|mut con| {
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut con)
                    .map_err(|e| spawn_err(e.to_string()))
            });
            match text {
                Ok(text) => return Ok(self.rows(&text)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(spawn_err(format!("no node answers CLUSTER NODES: {last}")))
    }

    fn rows(&self, text: &str) -> Vec<NodeRow> {
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                if f.len() < 8 || f[2].contains("fail") {
                    return None;
                }
                let port: u16 = f[1]
                    .split(['@', ','])
                    .next()?
                    .rsplit_once(':')?
                    .1
                    .parse()
                    .ok()?;
                let index = self.nodes.iter().position(|n| n.port() == Some(port))?;
                let master = (f[3] != "-").then(|| f[3].to_string());
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|a| (a, a)),
                    })
                    .collect();
                Some(NodeRow {
                    id: f[0].to_string(),
                    index,
                    master,
                    slots,
                })
            })
            .collect()
    }
}

/// What [`RedisCluster::failover`] did.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// The index of the old master (now a replica).
    pub old: usize,
    /// The index of the new master.
    pub new: usize,
    /// When the request that succeeded was made.
    pub asked_at: Instant,
    /// How many requests it took.
    pub asks: u32,
}

/// One line of `CLUSTER NODES`.
struct NodeRow {
    id: String,
    index: usize,
    /// The master's id, for a replica.
    master: Option<String>,
    slots: Vec<(u16, u16)>,
}

fn spawn_err(message: String) -> Error {
    Error::Spawn {
        what: "redis cluster",
        message,
    }
}

fn connect(node: &RedisServer) -> Result<redis::Connection> {
    let client = redis::Client::open(node.admin_url()).map_err(|e| spawn_err(e.to_string()))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| spawn_err(e.to_string()))?;
    let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
    Ok(con)
}

fn cluster_ok(node: &RedisServer) -> bool {
    let Ok(mut con) = connect(node) else {
        return false;
    };
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut con)
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}
