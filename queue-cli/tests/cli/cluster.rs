//! The CLI on a `redis+cluster://` URL: enqueue, inspect, pause, search and remove queues whose
//! keys live on different masters, and the health and server figures, with nothing else to
//! change.

use std::process::{Command, Stdio};

use queue::testing::{ClusterOptions, RedisCluster};

fn run(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(args)
        .env("REDIS_URL", url)
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run queue")
}

fn queue(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    assert!(
        out.status.success(),
        "queue {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn json(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(queue(url, &all).trim()).expect("json")
}

#[test]
fn the_cli_operates_queues_spread_over_a_cluster() {
    let cluster = RedisCluster::start(ClusterOptions {
        replicas: 0,
        ..ClusterOptions::default()
    })
    .expect("a 3-master cluster (redis-server and redis-cli must be installed)");
    let url = cluster.url();
    // Three queues, on three masters (the slot of each queue's tag decides).
    let queues = ["mail", "billing", "reports"];
    let mut ids = Vec::new();
    for q in queues {
        for n in 0..3 {
            let out = json(
                &url,
                &[
                    "enqueue",
                    "cli.email",
                    "--queue",
                    q,
                    "--args",
                    &format!(r#"{{"to":"{n}@example.com"}}"#),
                ],
            );
            ids.push((q, out["id"].as_str().expect("id").to_string()));
        }
    }
    let listed = json(&url, &["queues"]);
    for q in queues {
        assert!(listed.to_string().contains(q), "{listed}");
    }
    let stats = queue(&url, &["stats"]);
    for q in queues {
        assert!(stats.contains(q), "{stats}");
    }
    for (q, id) in &ids {
        let shown = json(&url, &["job", "show", id]);
        assert_eq!(shown["state"], "pending", "{shown}");
        assert_eq!(shown["queue"], *q, "{shown}");
    }
    let found = json(&url, &["jobs", "billing", "--state", "pending"]);
    assert_eq!(found.as_array().map(Vec::len), Some(3), "{found}");
    // A split queue is one queue to the operator: its jobs from before the split and those
    // sent to its shards since.
    let split = json(&url, &["queue", "split", "reports", "3"]);
    assert_eq!(split["shards"], 3, "{split}");
    for n in 0..6 {
        json(
            &url,
            &[
                "enqueue",
                "cli.email",
                "--queue",
                "reports",
                "--args",
                &format!(r#"{{"to":"r{n}@example.com"}}"#),
            ],
        );
    }
    let listed = json(&url, &["queues"]);
    assert_eq!(listed.to_string().matches("reports").count(), 1, "{listed}");
    let info = json(&url, &["queue", "inspect", "reports"]);
    assert_eq!(info["pending"], 9, "{info}");
    // A bulk change reaches every shard.
    let deleted = json(
        &url,
        &[
            "job",
            "delete-all",
            "reports",
            "--state",
            "pending",
            "--yes",
        ],
    );
    assert_eq!(deleted["count"], 9, "{deleted}");
    let info = json(&url, &["queue", "inspect", "reports"]);
    assert_eq!(info["pending"], 0, "{info}");
    // What a split queue refuses, each with a reason: another count, a one-shard split, a
    // shard name of no split, and one event log for all its parts.
    for args in [
        &["queue", "split", "reports", "4"][..],
        &["queue", "split", "mail", "1"][..],
        &["enqueue", "cli.email", "--queue", "x{0.1", "--args", "{}"][..],
        &["events", "reports"][..],
    ] {
        let out = run(&url, args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            ["not 4", "2 to 64", "no shard", "own event log"]
                .iter()
                .any(|w| err.contains(w)),
            "{args:?}: {err}"
        );
    }
    // A plain URL at a cluster node is the URL's mistake, said as such (not a retryable
    // redirect).
    let node = cluster.nodes()[0].url().to_string();
    let out = run(&node, &["stats", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON error document");
    assert_eq!(doc["error"]["kind"], "config", "{doc}");
    assert!(doc.to_string().contains("redis+cluster://"), "{doc}");
    queue(&url, &["queue", "pause", "reports"]);
    let info = json(&url, &["queue", "inspect", "reports"]);
    assert_eq!(info["paused"], true, "{info}");
    queue(&url, &["queue", "rm", "mail", "--yes", "--force"]);
    let listed = json(&url, &["queues"]);
    assert!(!listed.to_string().contains("\"mail\""), "{listed}");
    // Health reads the server's figures from a node; a paused queue with a backlog is a
    // finding, not an error.
    let health = run(&url, &["health"]);
    assert!(
        matches!(health.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
}
