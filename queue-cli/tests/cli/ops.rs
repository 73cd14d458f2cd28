//! The `queue` binary against real redis-server processes: every command's output and every
//! error path. A worker runs in the test process where a command needs real jobs to act on.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use queue::testing::RedisServer;

use crate::Server;
use queue::{job, Client, JobError, JobState, WorkerBuilder};
use serde::{Deserialize, Serialize};

fn queue(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(args)
        .env("REDIS_URL", server.url())
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run queue")
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = queue(server, args);
    assert!(
        out.status.success(),
        "queue {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(server: &Server, args: &[&str]) -> String {
    let out = queue(server, args);
    assert!(
        !out.status.success(),
        "queue {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.starts_with("error: "), "one clear line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: Option<String>,
}

#[job(name = "cli.email", crate = "::queue")]
async fn email(e: Email) -> Result<String, JobError> {
    Ok(format!("sent to {}", e.to))
}

#[job(name = "cli.broken", crate = "::queue", max_attempts = 1)]
async fn broken(_n: u32) -> Result<(), JobError> {
    Err(JobError::retry("smtp refused"))
}

async fn run_worker_until<F: std::future::Future<Output = ()>>(
    client: &Client,
    queue_name: &str,
    until: F,
) {
    // The handlers of this file, named: a worker runs what its scenario needs, not whatever
    // else the binary links.
    let registry =
        queue::worker::Registry::with_jobs(&["cli.email", "cli.broken"]).expect("registry");
    let worker = WorkerBuilder::with_client(client.clone())
        .registry(registry)
        .queue(queue_name, 1)
        .build()
        .await
        .expect("worker");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    until.await;
    let _ = tx.send(());
    handle.await.expect("join").expect("run");
}

#[tokio::test]
async fn enqueue_from_json_runs_in_a_rust_worker_and_shows_everywhere() {
    let server = crate::server();
    let out = ok(
        &server,
        &[
            "enqueue",
            "cli.email",
            "--queue",
            "mail",
            "--args",
            r#"{"to":"ada@example.com","subject":"hi"}"#,
            "--json",
        ],
    );
    let id = json(&out)["id"].as_str().expect("id").to_string();
    assert_eq!(json(&out)["duplicate"], false);

    let table = ok(&server, &["jobs", "mail"]);
    assert!(table.starts_with("ID  "), "{table}");
    assert!(
        table.contains(&id) && table.contains("cli.email") && table.contains("0/3"),
        "{table}"
    );

    let shown = json(&ok(&server, &["job", "show", &id, "--json"]));
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["args"]["to"], "ada@example.com");
    let human = ok(&server, &["job", "show", &id]);
    assert!(
        human.contains("state      pending") && human.contains("\"to\": \"ada@example.com\""),
        "{human}"
    );

    let client = Client::connect(server.url()).await.expect("client");
    let id_parsed = queue::JobId::parse(&id).expect("id");
    run_worker_until(&client, "mail", async {
        let o = client
            .wait_for("mail", &id_parsed, Duration::from_secs(20))
            .await
            .expect("outcome");
        assert_eq!(o.state, JobState::Completed);
        assert_eq!(
            o.result::<String>().expect("result"),
            "sent to ada@example.com"
        );
    })
    .await;

    let shown = json(&ok(&server, &["job", "show", &id, "--json"]));
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["result"], "sent to ada@example.com");
    // It ran once: one attempt used (not 0).
    assert_eq!(shown["attempt"], 1, "{shown}");
    let text = ok(&server, &["job", "show", &id]);
    assert!(text.contains("attempts   1 of"), "{text}");
    let stats = json(&ok(&server, &["stats", "--json"]));
    let mail = &stats["queues"][0];
    assert_eq!(mail["queue"], "mail");
    assert_eq!(mail["processed_1m"], 1);
    assert_eq!(mail["completed"], 1);
    assert!(stats["redis"]["version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
}

#[tokio::test]
async fn enqueue_options_and_duplicates() {
    let server = crate::server();
    let a = json(&ok(
        &server,
        &[
            "enqueue",
            "x.y",
            "--args",
            "[1,2]",
            "--unique-key",
            "k1",
            "--unique-for",
            "1h",
            "--json",
        ],
    ));
    let b = json(&ok(
        &server,
        &[
            "enqueue",
            "x.y",
            "--args",
            "[1,2]",
            "--unique-key",
            "k1",
            "--unique-for",
            "1h",
            "--json",
        ],
    ));
    assert_eq!(b["duplicate"], true);
    assert_eq!(a["id"], b["id"]);
    let human = ok(
        &server,
        &["enqueue", "x.y", "--unique-key", "k1", "--unique-for", "1h"],
    );
    assert!(human.starts_with("duplicate: job "), "{human}");
    ok(
        &server,
        &["enqueue", "x.y", "--delay", "10m", "--priority", "9"],
    );
    ok(&server, &["enqueue", "x.y", "--at", "2099-01-01T00:00:00Z"]);
    let sched = ok(&server, &["jobs", "default", "--state", "scheduled"]);
    assert!(
        sched.contains("in 10m") && sched.contains("  9  "),
        "{sched}"
    );

    // Run a delayed job now.
    let rows = json(&ok(
        &server,
        &["jobs", "default", "--state", "scheduled", "--json"],
    ));
    let sid = rows[0]["id"].as_str().expect("id").to_string();
    let out = ok(&server, &["job", "retry", &sid]);
    assert_eq!(out.trim(), "retried 1 of 1 job(s)");
    assert_eq!(
        json(&ok(&server, &["job", "show", &sid, "--json"]))["state"],
        "pending"
    );

    assert!(fails(&server, &["enqueue", "x.y", "--args", "{not json"])
        .contains("--args is not valid JSON"));
    assert!(fails(&server, &["enqueue", "x.y", "--at", "tomorrow"]).contains("RFC 3339"));
}

#[tokio::test]
async fn dead_jobs_can_be_listed_retried_and_deleted_in_bulk() {
    let server = crate::server();
    let client = Client::connect(server.url()).await.expect("client");
    let jobs = (0..30u32)
        .map(|i| {
            queue::NewJob::of::<broken>(&i)
                .expect("encode")
                .queue("flaky")
        })
        .collect();
    let enq = client.enqueue_batch(jobs).await.expect("enqueue");
    run_worker_until(&client, "flaky", async {
        for e in &enq {
            client
                .wait_for("flaky", &e.id, Duration::from_secs(20))
                .await
                .expect("outcome");
        }
    })
    .await;

    let dead = ok(
        &server,
        &["jobs", "flaky", "--state", "dead", "--limit", "5"],
    );
    assert_eq!(dead.lines().count(), 6, "header + 5 rows:\n{dead}");
    assert!(
        dead.contains("error: smtp refused") && dead.contains("DIED"),
        "{dead}"
    );
    let page2 = json(&ok(
        &server,
        &[
            "jobs", "flaky", "--state", "dead", "--limit", "25", "--page", "2", "--json",
        ],
    ));
    assert_eq!(page2.as_array().map(Vec::len), Some(5));

    let one = page2[0]["id"].as_str().expect("id").to_string();
    let shown = ok(&server, &["job", "show", &one]);
    assert!(
        shown.contains("state      dead") && shown.contains("#1") && shown.contains("smtp refused"),
        "{shown}"
    );
    assert_eq!(
        ok(&server, &["job", "retry", &one]).trim(),
        "retried 1 of 1 job(s)"
    );
    assert_eq!(
        json(&ok(&server, &["job", "show", &one, "--json"]))["state"],
        "pending"
    );

    let dry = ok(&server, &["job", "retry-all", "flaky", "--dry-run"]);
    assert!(dry.contains("would retry 29 dead job(s)"), "{dry}");
    let dry_named = json(&ok(
        &server,
        &[
            "job",
            "delete-all",
            "flaky",
            "--name",
            "nope",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(dry_named["count"], 0);

    // Without a terminal and without --yes, destructive commands refuse and say how to re-run.
    let err = fails(&server, &["job", "delete-all", "flaky"]);
    assert!(
        err.contains("re-run with --yes") && err.contains("queue job delete-all flaky --yes"),
        "{err}"
    );
    let done = json(&ok(
        &server,
        &[
            "job",
            "delete-all",
            "flaky",
            "--name",
            "cli.broken",
            "--yes",
            "--json",
        ],
    ));
    assert_eq!(done["count"], 29);
    let counts = client.counts("flaky").await.expect("counts");
    assert_eq!((counts.dead, counts.pending), (0, 1));

    let err = fails(&server, &["job", "delete", &one]);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        ok(&server, &["job", "delete", &one, "--yes"]).trim(),
        "deleted 1 of 1 job(s)"
    );
    assert!(fails(&server, &["job", "show", &one]).contains(&format!("no such job {one}")));
}

#[tokio::test]
async fn queue_pause_resume_purge_and_rm() {
    let server = crate::server();
    let client = Client::connect(server.url()).await.expect("client");
    ok(&server, &["enqueue", "a.b", "-q", "ops"]);
    ok(&server, &["enqueue", "a.b", "-q", "ops", "--delay", "1h"]);
    assert_eq!(
        ok(&server, &["queue", "pause", "ops"]).trim(),
        "queue ops paused: workers lease nothing from it until `queue queue resume`"
    );
    assert!(client.is_paused("ops").await.expect("paused"));
    assert!(ok(&server, &["queue", "inspect", "ops"]).contains("paused"));
    ok(&server, &["queue", "resume", "ops"]);
    assert!(!client.is_paused("ops").await.expect("paused"));

    let err = fails(&server, &["queue", "rm", "ops"]);
    assert!(
        err.contains("is not empty (1 pending, 1 scheduled")
            && err.contains("queue queue rm ops --force"),
        "{err}"
    );
    assert!(fails(&server, &["queue", "purge", "ops", "--state", "scheduled"]).contains("--yes"));
    let purged = json(&ok(
        &server,
        &[
            "queue",
            "purge",
            "ops",
            "--state",
            "scheduled",
            "--yes",
            "--json",
        ],
    ));
    assert_eq!(purged["deleted"], 1);
    assert!(fails(
        &server,
        &["queue", "purge", "ops", "--state", "active", "--yes"]
    )
    .contains("cannot be purged"));
    ok(&server, &["queue", "rm", "ops", "--force", "--yes"]);
    assert!(!ok(&server, &["queues"]).contains("ops"));
    let mut con = redis::Client::open(server.admin_url())
        .expect("url")
        .get_connection()
        .expect("con");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("queue:{ops}:*")
        .query(&mut con)
        .expect("keys");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn workers_are_listed_from_their_heartbeats() {
    let server = crate::server();
    let client = Client::connect(server.url()).await.expect("client");
    let url = server.url().to_string();
    run_worker_until(&client, "mail", async {
        let mut found = serde_json::Value::Null;
        for _ in 0..100 {
            let out = Command::new(env!("CARGO_BIN_EXE_queue"))
                .args(["workers", "--json", "--redis-url", &url])
                .output()
                .expect("run");
            found = json(&String::from_utf8_lossy(&out.stdout));
            if found.as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            // The first heartbeat is written within one heartbeat interval (1 s).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let w = &found[0];
        assert_eq!(w["alive"], true, "{found}");
        assert_eq!(w["pid"], std::process::id());
        assert_eq!(w["queues"], "mail:1");
        assert_eq!(w["concurrency"], 5);
    })
    .await;
    // A graceful stop removes the record.
    assert_eq!(
        json(&ok(&server, &["workers", "--json"])),
        serde_json::json!([])
    );
    assert!(ok(&server, &["workers"]).contains("no workers"));
}

#[tokio::test]
async fn health_reports_each_breach_and_exits_non_zero() {
    let server = crate::server();
    ok(&server, &["enqueue", "a.b", "-q", "h"]);
    let healthy = ok(&server, &["health"]);
    assert!(
        healthy.contains("ok   redis reachable") && healthy.trim_end().ends_with("healthy"),
        "{healthy}"
    );
    let out = queue(&server, &["health", "--max-backlog", "0"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL backlog h") && text.contains("1 pending (limit 0)"),
        "{text}"
    );

    let dir = tempfile_dir();
    let cfg = dir.join("health.toml");
    std::fs::File::create(&cfg)
        .and_then(|mut f| f.write_all(b"max_backlog = 0\n"))
        .expect("write config");
    let out = queue(
        &server,
        &["health", "--config", cfg.to_str().expect("path"), "--json"],
    );
    assert!(!out.status.success());
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["healthy"], false);
    std::fs::write(&cfg, "max_backlogg = 0\n").expect("write");
    assert!(fails(
        &server,
        &["health", "--config", cfg.to_str().expect("path")]
    )
    .contains("invalid health config"));
    // A configuration it cannot check with exits 3, not the 1 of a breach.
    let out = queue(
        &server,
        &["health", "--config", cfg.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(3));
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["health", "--redis-url", "nope://x"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A paused queue with a backlog, and a job waiting longer than the limit, are breaches.
    ok(&server, &["queue", "pause", "h"]);
    let out = queue(&server, &["health", "--max-wait", "1ms"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL paused h")
            && text.contains("1 pending")
            && text.contains("FAIL wait h"),
        "{text}"
    );
    ok(&server, &["queue", "resume", "h"]);

    // Redis with an eviction policy that can drop jobs.
    let lossy = crate::server_with(queue::testing::RedisServerOptions {
        args: vec![
            "--maxmemory".into(),
            "100mb".into(),
            "--maxmemory-policy".into(),
            "allkeys-lru".into(),
        ],
        ..Default::default()
    });
    let out = queue(&lossy, &["health"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("allkeys-lru can evict queued jobs"));
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("queue-cli-test-{}", queue::JobId::generate()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[tokio::test]
async fn clear_errors_for_every_failure() {
    let server = crate::server();
    ok(&server, &["enqueue", "a.b", "-q", "known"]);
    let err = fails(&server, &["jobs", "nope"]);
    assert_eq!(
        err.trim(),
        "error: no such queue \"nope\" (known queues: known)"
    );
    let err = fails(&server, &["job", "show", "01M8BTC4K86Y9DSR580WBYYWS3"]);
    assert_eq!(err.trim(), "error: no such job 01M8BTC4K86Y9DSR580WBYYWS3");
    assert!(fails(&server, &["job", "show", "not-an-id"]).contains("is not a ULID"));
    assert!(fails(&server, &["jobs", "known", "--state", "sleeping"])
        .contains("unknown state \"sleeping\""));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["stats", "--redis-url", &format!("redis://127.0.0.1:{port}")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot reach Redis at redis://127.0.0.1:")
            && err.contains("REDIS_URL"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args([
            "health",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL redis reachable"));

    let locked = RedisServer::start_with(queue::testing::RedisServerOptions {
        args: vec!["--requirepass".into(), "s3cret".into()],
        ..Default::default()
    })
    .expect("redis");
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["stats", "--redis-url", locked.url()])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Redis refused the credentials")
            && err.contains("redis://user:password@host:port"),
        "{err}"
    );
    let with_pass = locked.url().replace("redis://", "redis://:s3cret@");
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["stats", "--redis-url", &with_pass])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["stats", "--namespace", "bad name"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespace"));
}

#[test]
fn completions_and_plain_output_without_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["completions", "bash"])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_queue()"));
    let server = crate::server();
    let text = ok(&server, &["stats"]);
    assert!(
        !text.contains('\x1b'),
        "no colour codes when stdout is not a terminal"
    );
    assert!(text.contains("no queues yet"));
}

#[tokio::test]
async fn a_worker_that_stopped_beating_is_shown_dead() {
    let server = crate::server();
    let client = Client::connect(server.url()).await.expect("client");
    let admin = queue::admin::Admin::new(client.clone());
    let w = queue::admin::WorkerInfo {
        id: "host:42:abc".into(),
        host: "host".into(),
        pid: 42,
        queues: "mail:1".into(),
        concurrency: 5,
        in_flight: 2,
        started_ms: 0,
        last_beat_ms: 0,
        beat_every_ms: 1000,
    };
    admin.beat(&w).await.expect("beat");
    // Its last heartbeat was a minute ago: three missed beats make it dead.
    let ns = client.namespace_keys().expect("ns");
    let mut con = redis::Client::open(server.admin_url())
        .expect("url")
        .get_connection()
        .expect("con");
    let minute_ago = chrono::Utc::now().timestamp_millis() - 60_000;
    let _: () = redis::cmd("ZADD")
        .arg(ns.workers())
        .arg(minute_ago)
        .arg("host:42:abc")
        .query(&mut con)
        .expect("zadd");
    let rows = json(&ok(&server, &["workers", "--json"]));
    assert_eq!(rows[0]["alive"], false);
    assert_eq!(rows[0]["in_flight"], 2);
    let table = ok(&server, &["workers"]);
    assert!(
        table.contains("host:42:abc") && table.contains("dead") && table.contains("1m ago"),
        "{table}"
    );
    // Health names it.
    let out = queue(&server, &["health"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL workers") && text.contains("host:42:abc"),
        "{text}"
    );
}

#[test]
fn stats_watch_refreshes_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let server = crate::server();
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args([
            "stats",
            "--watch",
            "--interval",
            "100ms",
            "--json",
            "--redis-url",
            server.url(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..3 {
        let line = lines.next().expect("a refresh").expect("read");
        assert!(json(&line)["redis"]["version"].is_string(), "{line}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn cron_schedules_can_be_listed_paused_resumed_and_triggered() {
    let server = crate::server();
    let client = Client::connect(server.url()).await.expect("client");
    let s = queue::cron::Schedule::of::<email>(
        "welcome-digest",
        "0 9 * * 1-5",
        &Email {
            to: "team@example.com".into(),
            subject: None,
        },
    )
    .expect("schedule")
    .tz("Europe/Paris")
    .expect("tz");
    queue::cron::Cron::new(client.clone())
        .register(&[s])
        .await
        .expect("register");

    let table = ok(&server, &["cron", "ls"]);
    assert!(table.starts_with("SCHEDULE"), "{table}");
    assert!(
        table.contains("welcome-digest")
            && table.contains("0 9 * * 1-5")
            && table.contains("Europe/Paris")
            && table.contains("fire once"),
        "{table}"
    );
    let rows = json(&ok(&server, &["cron", "ls", "--json"]));
    assert_eq!(rows[0]["job"], "cli.email");
    assert!(rows[0]["next_ms"].as_i64().is_some());

    assert_eq!(
        ok(&server, &["cron", "pause", "welcome-digest"]).trim(),
        "schedule welcome-digest paused"
    );
    assert_eq!(
        json(&ok(&server, &["cron", "ls", "--json"]))[0]["paused"],
        true
    );
    ok(&server, &["cron", "resume", "welcome-digest"]);
    assert_eq!(
        json(&ok(&server, &["cron", "ls", "--json"]))[0]["paused"],
        false
    );

    let t = json(&ok(
        &server,
        &["cron", "trigger", "welcome-digest", "--json"],
    ));
    let id = t["id"].as_str().expect("id").to_string();
    let shown = json(&ok(&server, &["job", "show", &id, "--json"]));
    assert_eq!(shown["args"]["to"], "team@example.com");
    assert_eq!(shown["queue"], "default");
    assert_eq!(
        fails(&server, &["cron", "pause", "nope"]).trim(),
        "error: no such schedule \"nope\""
    );
}

#[tokio::test]
async fn events_are_shown_with_their_gaps() {
    let server = crate::server();
    assert_eq!(
        ok(&server, &["events", "audit", "--enable"]).trim(),
        "lifecycle events of audit are on"
    );
    for i in 0..5 {
        ok(
            &server,
            &["enqueue", "a.b", "-q", "audit", "--args", &i.to_string()],
        );
    }
    let lines: Vec<serde_json::Value> = ok(&server, &["events", "audit", "--json"])
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["type"], "enqueued");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["seq"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let human = ok(&server, &["events", "audit", "--last", "2"]);
    assert!(
        human.contains("#4")
            && human.contains("#5")
            && human.contains("enqueued")
            && !human.contains("#3"),
        "{human}"
    );

    // Entries 2 and 3 vanish from the log: the reader is told how many it missed.
    let mut con = redis::Client::open(server.admin_url())
        .expect("url")
        .get_connection()
        .expect("con");
    let entries: Vec<String> = lines
        .iter()
        .map(|l| l["entry"].as_str().unwrap_or_default().to_string())
        .collect();
    let _: i64 = redis::cmd("XDEL")
        .arg("queue:{audit}:events")
        .arg(&entries[1])
        .arg(&entries[2])
        .query(&mut con)
        .expect("xdel");
    let human = ok(&server, &["events", "audit"]);
    assert!(
        human.contains("gap: 2 event(s) missed (seq 2..3)"),
        "{human}"
    );
    let since = ok(
        &server,
        &["events", "audit", "--since", &entries[3], "--json"],
    );
    assert_eq!(since.lines().count(), 1, "{since}");
    assert_eq!(
        ok(&server, &["events", "audit", "--disable"]).trim(),
        "lifecycle events of audit are off"
    );
}

#[tokio::test]
async fn ratelimit_stats_show_allowed_and_rejected_per_limit() {
    let server = crate::server();
    assert!(ok(&server, &["ratelimit", "stats"]).contains("no rate-limit metrics yet"));
    let client = Client::connect(server.url()).await.expect("client");
    let limiter = queue::rate_limit::RateLimiter::new(
        client,
        vec![queue::rate_limit::Limit::parse("3/1m")
            .expect("limit")
            .named("login")],
    );
    for _ in 0..5 {
        limiter.check("user:1").await;
    }
    limiter.flush_metrics().await.expect("flush");
    let rows = json(&ok(&server, &["ratelimit", "stats", "--json"]));
    assert_eq!(
        rows,
        serde_json::json!([{ "limit": "login", "allowed": 3, "rejected": 2, "rejected_pct": 40.0 }])
    );
    let table = ok(&server, &["ratelimit", "stats"]);
    assert!(
        table.contains("login") && table.contains("40.0%"),
        "{table}"
    );
}

#[tokio::test]
async fn cache_stats_show_hits_misses_and_loads_per_policy() {
    let server = crate::server();
    assert!(ok(&server, &["cache", "stats"]).contains("no cache metrics yet"));
    let client = Client::connect(server.url()).await.expect("client");
    let cache = queue::cache::Cache::new(client);
    let policy = queue::cache::CachePolicy::query_results();
    for _ in 0..4 {
        cache
            .get_or_load(&queue::cache::CacheKey::new("p", "1"), &policy, || async {
                Ok::<_, String>(Some(1u32))
            })
            .await
            .expect("load");
    }
    cache.flush_stats().await.expect("flush");
    let rows = json(&ok(&server, &["cache", "stats", "--json"]));
    assert_eq!(rows[0]["policy"], "query_results");
    assert_eq!(
        (
            rows[0]["hits"].as_u64(),
            rows[0]["misses"].as_u64(),
            rows[0]["loads"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(rows[0]["hit_ratio"], 0.75);
    assert!(ok(&server, &["cache", "stats"]).contains("75.0%"));
}

/// Least privilege: every operator command runs as the operator user `queue acl` prints (no
/// `@dangerous` command but `INFO`), and that user is refused another namespace.
#[test]
fn every_operator_command_runs_as_the_documented_operator_user() {
    let server = crate::server();
    let mut admin = redis::Client::open(server.admin_url())
        .expect("url")
        .get_connection()
        .expect("admin");
    let printed = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["acl", "--role", "operator", "--json"])
        .output()
        .expect("queue acl");
    let rules = json(&String::from_utf8(printed.stdout).expect("utf-8"))[0]["rules"]
        .as_str()
        .expect("rules")
        .to_string();
    let mut setuser = redis::cmd("ACL");
    setuser.arg(&["SETUSER", "operator", "reset", "on", ">op-pw"]);
    setuser.arg(rules.split_whitespace().collect::<Vec<_>>());
    setuser.query::<()>(&mut admin).expect("ACL SETUSER");
    let url = queue::testing::with_credentials(server.inner_url(), "operator", "op-pw");
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_queue"))
            .args(args)
            .env("REDIS_URL", &url)
            .env_remove("QUEUE_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run queue")
    };
    let ok_as = |args: &[&str]| -> String {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "queue {args:?} as operator: {err}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!err.contains("NOPERM"), "queue {args:?}: {err}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let id = json(&ok_as(&["enqueue", "cli.email", "-q", "mail", "--json"]))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let stats = json(&ok_as(&["stats", "--json"]));
    assert!(
        stats["redis"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "INFO is the operator's: {stats}"
    );
    for args in [
        &["queues"][..],
        &["jobs", "mail"],
        &["job", "show", &id],
        &["queue", "inspect", "mail"],
        &["history", "mail"],
        &["queue", "pause", "mail"],
        &["queue", "resume", "mail"],
        &["workers"],
        &["events", "mail", "--enable"],
        &["events", "mail"],
        &["cron", "ls"],
        &["cache", "stats"],
        &["ratelimit", "stats"],
        &["job", "retry-all", "mail", "--dry-run"],
        &["job", "delete", &id, "--yes"],
        &["enqueue", "cli.email", "-q", "mail"],
        &["queue", "purge", "mail", "--yes"],
    ] {
        ok_as(args);
    }
    let health = run(&["health", "--json"]);
    let report = json(&String::from_utf8(health.stdout).expect("utf-8"));
    assert!(report.get("error").is_none(), "{report}");
    // Another namespace's keys are not the operator's.
    let out = run(&["stats", "--namespace", "other", "--json"]);
    assert!(!out.status.success());
    let err = json(&String::from_utf8(out.stdout).expect("utf-8"));
    assert_eq!(err["error"]["kind"], "permission", "{err}");
}

/// `queue history` reads the per-minute hashes of docs/PROTOCOL.md ("Metrics history"), adds
/// them up in steps and by name, and computes percentiles from the buckets.
#[test]
fn history_adds_up_minutes_in_steps() {
    let server = crate::server();
    ok(&server, &["enqueue", "cli.email", "-q", "hist"]);
    let mut admin = redis::Client::open(server.admin_url())
        .expect("url")
        .get_connection()
        .expect("admin");
    let minute = chrono::Utc::now().timestamp_millis() / 60_000;
    // Two minutes ago and now: a name with a `|` in it stays one name.
    for (m, fields) in [
        (
            minute - 2,
            vec![("c|a", 3), ("f|a", 1), ("r|a", 1), ("t3|a", 4)],
        ),
        (
            minute,
            vec![("c|a", 1), ("c|b|x", 5), ("d|b|x", 2), ("w15|b|x", 5)],
        ),
    ] {
        for (f, n) in fields {
            redis::cmd("HINCRBY")
                .arg(format!("queue:{{hist}}:metrics:{m}"))
                .arg(f)
                .arg(n)
                .query::<()>(&mut admin)
                .expect("seed");
        }
    }
    let report = json(&ok(
        &server,
        &[
            "history", "hist", "--since", "10m", "--step", "5m", "--json",
        ],
    ));
    assert_eq!(report["step_ms"], 300_000);
    assert_eq!(report["names"]["a"]["completed"], 4, "{report}");
    assert_eq!(report["names"]["b|x"]["dead"], 2, "{report}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "10 minutes in steps of 5: {report}");
    let total = |field: &str| {
        steps
            .iter()
            .map(|s| s[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(
        (
            total("completed"),
            total("failed"),
            total("retried"),
            total("dead")
        ),
        (9, 1, 1, 2)
    );
    // Every run took (5, 10] ms: the median interpolates to the middle of the bucket.
    assert!(steps.iter().any(|s| s["run_p50_ms"] == 7.5), "{report}");
    // Waits past the last bound answer with it.
    assert!(
        steps.iter().any(|s| s["wait_p99_ms"] == 60_000.0),
        "{report}"
    );
    let only = json(&ok(
        &server,
        &["history", "hist", "--since", "10m", "--name", "a", "--json"],
    ));
    let completed: u64 = only["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["completed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(completed, 4);
    let table = ok(&server, &["history", "hist", "--since", "10m"]);
    assert!(
        table.contains("COMPLETED") && table.contains("b|x"),
        "{table}"
    );
    let hour = json(&ok(&server, &["history", "hist", "--json"]));
    assert_eq!(
        hour["steps"].as_array().map(Vec::len),
        Some(60),
        "an hour, minute by minute"
    );
    let err = fails(&server, &["history", "hist", "--since", "73h"]);
    assert!(err.contains("at most 72h"), "{err}");
    let err = fails(&server, &["history", "hist", "--step", "90s"]);
    assert!(err.contains("whole number of minutes"), "{err}");
    let err = fails(&server, &["history", "nope"]);
    assert!(err.contains("no such queue"), "{err}");
}

/// `queue web`: serves the dashboard on the address it prints, signs in with the token it was
/// given, stops on SIGTERM; refuses to serve open beyond loopback, and refuses a short token.
#[test]
fn web_serves_the_dashboard_until_sigterm() {
    use std::io::{BufRead, Read, Write};
    let server = crate::server();
    ok(&server, &["enqueue", "cli.email", "-q", "webq"]);
    let err = fails(&server, &["web", "--addr", "0.0.0.0:0"]);
    assert!(err.contains("--token or --user"), "{err}");
    let err = fails(
        &server,
        &["web", "--addr", "127.0.0.1:0", "--token", "short"],
    );
    assert!(err.contains("at least 16 characters"), "{err}");

    let token = "cli-web-token-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["web", "--addr", "127.0.0.1:0", "--json", "--token", token])
        .env("REDIS_URL", server.url())
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn queue web");
    let guard = Killed(child.id());
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let started = json(&line);
    let url = started["listening"].as_str().expect("url").to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let get = |auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(s, "GET /queues/webq HTTP/1.0\r\nHost: x\r\n{auth}\r\n").expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        reply
    };
    assert!(get(None).starts_with("HTTP/1.0 401"), "{}", get(None));
    let page = get(Some(token));
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(page.contains("cli.email"), "{page}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("queue web stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
    drop(guard);
}

/// Kills a process on drop (a failing assertion included).
struct Killed(u32);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
