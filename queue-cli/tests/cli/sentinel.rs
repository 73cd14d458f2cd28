//! The CLI on a `redis+sentinel://` URL: it finds the primary through the Sentinels, and the
//! new one after a failover, with nothing else to change.

use std::process::{Command, Stdio};

use queue::testing::{SentinelOptions, SentinelSet};

fn queue(url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(args)
        .env("REDIS_URL", url)
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run queue");
    assert!(
        out.status.success(),
        "queue {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_cli_finds_the_primary_through_sentinels_before_and_after_a_failover() {
    let mut set = SentinelSet::start(SentinelOptions::default()).expect("a Sentinel deployment");
    let url = set.url();
    let out = queue(
        &url,
        &[
            "enqueue",
            "cli.email",
            "--queue",
            "mail",
            "--args",
            r#"{"to":"ada@example.com"}"#,
            "--json",
        ],
    );
    let id = serde_json::from_str::<serde_json::Value>(out.trim()).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // The replica has it before the failover is asked for.
    let primary = set.primary().expect("a primary");
    let mut con = redis::Client::open(set.servers()[primary].admin_url())
        .and_then(|c| c.get_connection())
        .expect("primary");
    let replicas: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(10_000)
        .query(&mut con)
        .expect("WAIT");
    assert_eq!(replicas, 1);

    let new = set.failover().expect("failover");
    assert_ne!(new, primary);
    let shown: serde_json::Value =
        serde_json::from_str(queue(&url, &["job", "show", &id, "--json"]).trim()).expect("json");
    assert_eq!(shown["state"], "pending", "{shown}");
    let stats = queue(&url, &["stats"]);
    assert!(stats.contains("mail"), "{stats}");
}
