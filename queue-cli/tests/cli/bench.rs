//! `queue bench` end to end: the real binary against a real redis-server.

use std::process::Command;

use queue::testing::RedisServer;

#[test]
fn bench_json_reports_every_figure() {
    let server = RedisServer::start().expect("redis-server");
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args([
            "bench",
            "--redis-url",
            server.url(),
            "--jobs",
            "3000",
            "--concurrency",
            "20",
        ])
        .args(["--rate", "200", "--latency-secs", "1", "--json"])
        .output()
        .expect("run queue bench");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for field in [
        "enqueue_jobs_per_sec",
        "process_jobs_per_sec",
        "latency_p50_ms",
        "latency_p99_ms",
        "bytes_per_waiting_job",
        "redis_cpu_us_per_job",
    ] {
        let x = v[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing in {v}"));
        assert!(x > 0.0, "{field} = {x}");
    }
    assert_eq!(v["jobs"], 3000);
    assert_eq!(v["latency_jobs"], 200);
    // The benchmark cleans up after itself: only its own namespace was used, and it is gone.
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("keys");
    assert!(
        keys.iter()
            .all(|k| !k.contains(":pending") && !k.contains(":stats")),
        "left behind: {keys:?}"
    );
}

#[test]
fn enqueue_only_leaves_jobs_waiting() {
    let server = RedisServer::start().expect("redis-server");
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args([
            "bench",
            "--redis-url",
            server.url(),
            "--jobs",
            "2500",
            "--enqueue-only",
            "--queue",
            "big",
        ])
        .output()
        .expect("run queue bench");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let n: u64 = redis::cmd("ZCARD")
        .arg("queue:{big}:pending")
        .query(&mut con)
        .expect("zcard");
    assert_eq!(n, 2500);
}

#[test]
fn unreachable_redis_is_one_clear_line_and_a_failure_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args([
            "bench",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
            "--jobs",
            "10",
        ])
        .output()
        .expect("run queue bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot reach Redis at redis://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("REDIS_URL"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
