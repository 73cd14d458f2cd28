//! What the `queue` binary reads and how it fails: `--args @FILE` and `--args -`, one JSON
//! error document with `--json` (unreachable Redis, a missing job, an out-of-memory Redis, a
//! refused command line), no password in any error, and names with control characters that
//! cannot forge output lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use queue::testing::{RedisServer, RedisServerOptions};

fn queue_at(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(args)
        .env("REDIS_URL", url)
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run queue")
}

/// Runs `queue` with `input` on its stdin.
fn queue_with_stdin(url: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(args)
        .env("REDIS_URL", url)
        .env_remove("QUEUE_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn queue");
    let mut stdin = child.stdin.take().expect("stdin");
    // The command reads all of stdin before it prints anything, so writing first cannot
    // deadlock on a full stdout pipe.
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait queue")
}

fn stdout_of(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "queue {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The JSON error document a `--json` command printed: exactly one line on stdout, exit 1
/// (or `code`).
fn json_error(out: &Output, code: i32) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one document: {stdout}");
    let v = json(&stdout);
    let e = &v["error"];
    assert!(e["kind"].is_string(), "{v}");
    assert!(e["retryable"].is_boolean(), "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
    v
}

/// The one-line text error of a failed command (stderr), checked for its `error: ` prefix.
fn text_error(out: &Output) -> String {
    assert!(!out.status.success(), "should fail");
    let err = String::from_utf8(out.stderr.clone()).expect("utf-8");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("queue-cli-input-{}", queue::JobId::generate()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("redis://127.0.0.1:{port}")
}

#[test]
fn enqueue_reads_large_args_from_a_file_or_stdin() {
    let server = crate::server();
    let url = server.url();
    let dir = temp_dir();
    // 200 KB of arguments: over what one command-line argument may hold on Linux (128 KiB).
    let args = serde_json::json!({
        "to": "ada@example.com",
        "body": "x".repeat(200 * 1024),
        "tags": ["a", "b"],
        "n": 42,
    });
    let file = dir.join("args.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&args).expect("json")).expect("write");
    let at_file = format!("@{}", file.display());

    let cmd = [
        "enqueue", "big.job", "-q", "files", "--args", &at_file, "--json",
    ];
    let id = json(&stdout_of(&queue_at(url, &cmd), &cmd))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let listed = ["jobs", "files", "--json"];
    let rows = json(&stdout_of(&queue_at(url, &listed), &listed));
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "one job: {rows}");
    assert_eq!(rows[0]["id"], id.as_str());
    let show = ["job", "show", &id, "--json"];
    let shown = json(&stdout_of(&queue_at(url, &show), &show));
    assert_eq!(shown["args"], args, "the arguments round-trip");

    let cmd = ["enqueue", "big.job", "-q", "stdin", "--args", "-", "--json"];
    let out = queue_with_stdin(url, &cmd, &serde_json::to_vec(&args).expect("json"));
    let id = json(&stdout_of(&out, &cmd))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let show = ["job", "show", &id, "--json"];
    let shown = json(&stdout_of(&queue_at(url, &show), &show));
    assert_eq!(
        shown["args"], args,
        "the arguments round-trip through stdin"
    );
    assert_eq!(shown["queue"], "stdin");

    // A literal value still works, and the text output is unchanged.
    let cmd = ["enqueue", "small.job", "-q", "stdin", "--args", "[1,2]"];
    let line = stdout_of(&queue_at(url, &cmd), &cmd);
    assert!(
        line.starts_with("enqueued small.job ") && line.trim_end().ends_with(" in stdin"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_or_invalid_args_files_are_named_in_the_error() {
    let server = crate::server();
    let url = server.url();
    let dir = temp_dir();
    let missing = dir.join("missing.json");
    let missing_arg = format!("@{}", missing.display());
    let err = text_error(&queue_at(url, &["enqueue", "a.b", "--args", &missing_arg]));
    assert!(
        err.contains(&format!("--args file \"{}\"", missing.display()))
            && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"to\": \"ada\",\n  oops}").expect("write");
    let bad_arg = format!("@{}", bad.display());
    let err = text_error(&queue_at(url, &["enqueue", "a.b", "--args", &bad_arg]));
    assert!(
        err.contains(&format!(
            "--args file \"{}\" is not valid JSON",
            bad.display()
        )) && err.contains("line 2"),
        "{err}"
    );
    let err = text_error(&queue_at(
        url,
        &["enqueue", "a.b", "--args", &format!("@{}", dir.display())],
    ));
    assert!(err.contains("--args file"), "a directory: {err}");
    let err = text_error(&queue_at(url, &["enqueue", "a.b", "--args", "@"]));
    assert!(err.contains("needs a file name"), "{err}");
    let err = text_error(&queue_with_stdin(
        url,
        &["enqueue", "a.b", "--args", "-"],
        b"not json",
    ));
    assert!(err.contains("--args - (stdin) is not valid JSON"), "{err}");

    let v = json_error(
        &queue_at(url, &["enqueue", "a.b", "--args", &missing_arg, "--json"]),
        1,
    );
    assert_eq!(v["error"]["kind"], "io", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing.json")),
        "{v}"
    );
    let v = json_error(
        &queue_at(url, &["enqueue", "a.b", "--args", &bad_arg, "--json"]),
        1,
    );
    assert_eq!(v["error"]["kind"], "other", "{v}");

    // Nothing was enqueued by any of them.
    let out = queue_at(url, &["queues", "--json"]);
    assert_eq!(json(&stdout_of(&out, &["queues"])), serde_json::json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_errors_are_one_json_document_with_the_kind() {
    // Unreachable: every command, `stats --watch` included (its stream ends with the error).
    let closed = closed_port_url();
    for cmd in [
        &["stats", "--json"][..],
        &["stats", "--watch", "--interval", "100ms", "--json"],
        &["jobs", "mail", "--json"],
        &["enqueue", "a.b", "--json"],
    ] {
        let v = json_error(&queue_at(&closed, cmd), 1);
        assert_eq!(v["error"]["kind"], "connection", "{cmd:?}: {v}");
        assert_eq!(v["error"]["retryable"], true, "{cmd:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot reach Redis at redis://127.0.0.1:")),
            "{v}"
        );
    }

    // Not found: a job and a queue.
    let server = crate::server();
    let url = server.url();
    let v = json_error(
        &queue_at(
            url,
            &["job", "show", "01M8BTC4K86Y9DSR580WBYYWS3", "--json"],
        ),
        1,
    );
    assert_eq!(
        v["error"],
        serde_json::json!({
            "kind": "not_found",
            "retryable": false,
            "message": "no such job 01M8BTC4K86Y9DSR580WBYYWS3",
        })
    );
    let v = json_error(&queue_at(url, &["queue", "pause", "nope", "--json"]), 1);
    assert_eq!(v["error"]["kind"], "not_found", "{v}");
    let v = json_error(
        &queue_at(url, &["jobs", "nope", "--state", "sleeping", "--json"]),
        1,
    );
    assert_eq!(v["error"]["kind"], "config", "{v}");

    // A command line the parser refuses: JSON too, with the parser's exit code.
    let v = json_error(
        &queue_at(url, &["jobs", "q", "--limit", "many", "--json"]),
        2,
    );
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--limit")),
        "{v}"
    );
    let v = json_error(&queue_at(url, &["--json", "no-such-command"]), 2);
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    let out = queue_at(url, &["jobs", "q", "--limit", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    // Out of memory: a full Redis that refuses writes rather than evict jobs.
    let full = crate::server_with(RedisServerOptions {
        args: vec![
            "--maxmemory".into(),
            "1mb".into(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
        ],
        ..Default::default()
    });
    let mut con = redis::Client::open(full.admin_url())
        .expect("url")
        .get_connection()
        .expect("connection");
    let filler = vec![b'x'; 64 * 1024];
    let mut refused = false;
    for i in 0..200 {
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query(&mut con);
        if let Err(e) = r {
            assert_eq!(e.code(), Some("OOM"), "{e}\nlog:\n{}", full.log());
            refused = true;
            break;
        }
    }
    assert!(refused, "1 MB of maxmemory filled\nlog:\n{}", full.log());
    // One command that writes: the kind is the library's `OutOfMemory`.
    let v = json_error(
        &queue_at(full.url(), &["events", "audit", "--enable", "--json"]),
        1,
    );
    assert_eq!(v["error"]["kind"], "out_of_memory", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Redis is out of memory")),
        "{v}"
    );
    // An enqueue's first write is the queue's registration, a pipeline: its OOM is read from
    // the failed command inside.
    let v = json_error(
        &queue_at(
            full.url(),
            &["enqueue", "a.b", "--args", "{\"n\":1}", "--json"],
        ),
        1,
    );
    assert_eq!(v["error"]["kind"], "out_of_memory", "{v}");
    assert_eq!(v["error"]["retryable"], false, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("OOM")),
        "{v}"
    );
    let err = text_error(&queue_at(full.url(), &["events", "audit", "--enable"]));
    assert!(err.contains("Redis is out of memory"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_server_that_may_evict_is_refused_unless_allowed() {
    let lossy = crate::server_with(RedisServerOptions {
        args: vec![
            "--maxmemory".into(),
            "100mb".into(),
            "--maxmemory-policy".into(),
            "allkeys-lru".into(),
        ],
        ..Default::default()
    });
    let v = json_error(&queue_at(lossy.url(), &["stats", "--json"]), 1);
    assert_eq!(v["error"]["kind"], "config", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("allkeys-lru") && m.contains("QUEUE_ALLOW_EVICTION")),
        "{v}"
    );
    let cmd = ["stats", "--allow-eviction", "--json"];
    let report = json(&stdout_of(&queue_at(lossy.url(), &cmd), &cmd));
    assert_eq!(report["redis"]["maxmemory_policy"], "allkeys-lru");
    let out = Command::new(env!("CARGO_BIN_EXE_queue"))
        .args(["stats", "--json"])
        .env("REDIS_URL", lossy.url())
        .env("QUEUE_ALLOW_EVICTION", "1")
        .output()
        .expect("run queue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // `health` reports the policy as a failed check instead of failing to connect.
    let out = queue_at(lossy.url(), &["health", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["healthy"], false, "{v}");
    assert!(
        v["checks"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["check"] == "eviction policy" && c["ok"] == false)),
        "{v}"
    );
}

#[test]
fn errors_never_show_the_password() {
    let locked = RedisServer::start_with(RedisServerOptions {
        args: vec!["--requirepass".into(), "s3cret-pass".into()],
        ..Default::default()
    })
    .expect("redis");
    let wrong = locked.url().replace("redis://", "redis://:wr0ng-pass@");
    let out = queue_at(&wrong, &["stats", "--json"]);
    let v = json_error(&out, 1);
    assert_eq!(v["error"]["kind"], "auth", "{v}");
    let socket = "redis+unix:///nonexistent/queue-cli.sock?db=0&pass=hunter2-pass";
    let closed = closed_port_url().replace("redis://", "redis://app:p%40ss-word@");
    for (url, secret) in [
        (wrong.as_str(), "wr0ng-pass"),
        (socket, "hunter2-pass"),
        (closed.as_str(), "ss-word"),
    ] {
        for cmd in [
            &["stats"][..],
            &["stats", "--json"],
            &["health"],
            &["health", "--json"],
        ] {
            let out = queue_at(url, cmd);
            assert!(!out.status.success(), "{url} {cmd:?}");
            for stream in [&out.stdout, &out.stderr] {
                let text = String::from_utf8_lossy(stream);
                assert!(!text.contains(secret), "{url} {cmd:?}: {text}");
            }
        }
    }
}

#[tokio::test]
async fn names_with_control_characters_cannot_forge_lines() {
    let server = crate::server();
    let url = server.url();
    let client = queue::Client::connect(url).await.expect("client");
    let admin = queue::admin::Admin::new(client.clone());
    // Worker records and the queue registry are written by other processes: nothing the CLI
    // reads from Redis can be trusted to be printable.
    admin
        .beat(&queue::admin::WorkerInfo {
            id: "w1\nforged-worker alive".into(),
            host: "host\x1b[2J".into(),
            pid: 7,
            queues: "mail:1".into(),
            concurrency: 1,
            in_flight: 0,
            started_ms: chrono::Utc::now().timestamp_millis(),
            last_beat_ms: chrono::Utc::now().timestamp_millis(),
            beat_every_ms: 1000,
        })
        .await
        .expect("beat");
    let ns = client.namespace_keys().expect("namespace");
    let mut con = redis::Client::open(url)
        .expect("url")
        .get_connection()
        .expect("connection");
    let _: () = redis::cmd("SADD")
        .arg(ns.queues())
        .arg("evil\nerror: forged line")
        .query(&mut con)
        .expect("sadd");

    let table = stdout_of(&queue_at(url, &["workers"]), &["workers"]);
    assert_eq!(table.lines().count(), 2, "header and one row: {table}");
    assert!(!table.contains('\x1b'), "{table:?}");
    assert!(
        table.contains("w1\\nforged-worker alive") && table.contains("host\\u{1b}[2J"),
        "{table}"
    );
    // JSON stays lossless.
    let rows = json(&stdout_of(
        &queue_at(url, &["workers", "--json"]),
        &["workers"],
    ));
    assert_eq!(rows[0]["id"], "w1\nforged-worker alive");

    // The registry's bad name is no queue: an error that lists the known queues leaves it
    // out, and stays one line.
    let err = text_error(&queue_at(url, &["jobs", "nope"]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("forged line"), "{err}");
    let v = json_error(&queue_at(url, &["jobs", "nope", "--json"]), 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.contains("forged line")),
        "{v}"
    );
}

/// A schedule definition that does not decode (anyone with write access can put one there) is
/// skipped with a warning, and the warning carries no colour codes into a pipe.
#[test]
fn a_malformed_schedule_definition_does_not_break_cron_ls() {
    let server = crate::server();
    let mut admin = redis::Client::open(server.admin_url())
        .expect("url")
        .get_connection()
        .expect("admin");
    redis::cmd("HSET")
        .arg("queue:schedules")
        .arg("bogus")
        .arg("not json")
        .query::<()>(&mut admin)
        .expect("seed");
    let cmd = ["cron", "ls", "--json"];
    let out = queue_at(server.url(), &cmd);
    assert_eq!(json(&stdout_of(&out, &cmd)), serde_json::json!([]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipping a schedule definition"), "{err}");
    assert!(err.contains("\"bogus\""), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no ANSI codes into a pipe: {err:?}"
    );
}

/// A time already past for `--at`, and an `--since` that is no event entry, are refused with
/// a reason before anything reaches Redis (once accepted silently, and a raw Redis error).
#[test]
fn a_past_time_and_a_malformed_entry_are_refused_with_a_reason() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let past = queue_at(
        url,
        &[
            "enqueue",
            "cli.email",
            "--args",
            "{}",
            "--at",
            "2020-01-01T00:00:00Z",
        ],
    );
    let e = text_error(&past);
    assert!(e.contains("is in the past"), "{e}");
    let garbage = queue_at(url, &["events", "default", "--since", "garbage", "--json"]);
    let doc = json_error(&garbage, 2);
    assert_eq!(doc["error"]["kind"], "usage", "{doc}");
    assert!(doc.to_string().contains("no event entry"), "{doc}");
    let fine = queue_at(
        url,
        &["enqueue", "cli.email", "--args", "{}", "--queue", "ev"],
    );
    stdout_of(&fine, &["enqueue"]);
    let resumed = queue_at(url, &["events", "ev", "--since", "0-0"]);
    stdout_of(&resumed, &["events", "ev", "--since", "0-0"]);
}

/// A search by name reads the first 10,000 entries of a state and says so when it stopped
/// with more unread, instead of a bare "no jobs".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_by_name_says_where_it_stopped() {
    let server = RedisServer::start().expect("redis");
    let client = queue::Client::connect(server.url()).await.expect("connect");
    let args = queue::wire::encode_value(&serde_json::json!({"to": "x"}), "args").expect("args");
    for _ in 0..11 {
        let jobs: Vec<queue::NewJob> = (0..1000)
            .map(|_| queue::NewJob::raw("cli.email", args.clone()).queue("big"))
            .collect();
        client.enqueue_batch(jobs).await.expect("enqueue");
    }
    client
        .enqueue_job(queue::NewJob::raw("cli.rare", args.clone()).queue("big"))
        .await
        .expect("enqueue");
    let url = server.url().to_string();
    let out = tokio::task::spawn_blocking(move || {
        queue_at(
            &url,
            &["jobs", "big", "--state", "pending", "--name", "cli.rare"],
        )
    })
    .await
    .expect("run");
    let stdout = stdout_of(&out, &["jobs"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only the first 10000"), "{stderr}");
    assert!(stdout.contains("among the first 10000"), "{stdout}");
}
