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
        while !cluster.nodes.iter().all(cluster_ok) {
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
}

fn cluster_ok(node: &RedisServer) -> bool {
    let Ok(client) = redis::Client::open(node.admin_url()) else {
        return false;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return false;
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut con)
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}
