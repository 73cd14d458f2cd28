//! `init_logging`: `QUEUE_LOG_FORMAT=json` writes one JSON object per line, a completed job
//! logs one line at info with its duration and its span (id, name, queue), a pipe gets no
//! colour codes, and a wrong format is a clear error. Each case runs in a child process, since
//! a global subscriber is installed once per process.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Env;
use queue::{job, ErrorKind, JobContext, JobError, JobState, NewJob};

/// A producer's trace context (the W3C example).
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[job(name = "logs.hello", queue = "logs")]
async fn hello(_n: u32, ctx: JobContext) -> Result<(), JobError> {
    // The handler gets the producer's trace context, to pass on.
    if ctx.traceparent.as_deref() != Some(TRACEPARENT) {
        return Err(JobError::dead_letter(format!(
            "traceparent {:?}",
            ctx.traceparent
        )));
    }
    Ok(())
}

/// Runs `child_logs` in a child process with `format`; returns (success, stderr).
fn run_child(env: &Env, format: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .arg(common::test_name(module_path!(), "child_logs"))
        .args(["--exact", "--nocapture", "--test-threads=1"])
        .env("QUEUE_LOG_CHILD_URL", env.url())
        .env("QUEUE_LOG_FORMAT", format)
        // Empty, as a unit file's `RUST_LOG=` leaves it: info.
        .env("RUST_LOG", "")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("spawn child");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The child: installs the logging, runs one job through a worker. A no-op unless started by
/// the test below.
#[tokio::test]
async fn child_logs() {
    let Ok(url) = std::env::var("QUEUE_LOG_CHILD_URL") else {
        return;
    };
    queue::worker::init_logging().expect("init_logging");
    let client = queue::Client::connect(&url).await.expect("connect");
    let running = common::start_worker(&client, &["logs.hello"], |b| b.queue("logs", 1)).await;
    let job = NewJob::of::<hello>(&1)
        .expect("encode")
        .traceparent(TRACEPARENT);
    let id = client.enqueue_job(job).await.expect("enqueue").id;
    let out = client
        .wait_for("logs", &id, Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Completed);
    running.stop().await;
}

#[tokio::test]
async fn json_logs_carry_the_job_and_its_duration() {
    let env = Env::start().await;
    let (ok, stderr) = run_child(&env, "json");
    assert!(ok, "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes into a pipe: {stderr}"
    );
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = events
        .iter()
        .find(|e| e["fields"]["message"] == "job completed")
        .unwrap_or_else(|| panic!("no completed job in:\n{stderr}"));
    assert_eq!(done["level"], "INFO", "{done}");
    assert!(done["fields"]["elapsed_ms"].is_u64(), "{done}");
    assert_eq!(done["span"]["traceparent"], TRACEPARENT, "{done}");
    assert_eq!(done["span"]["name"], "job", "{done}");
    // As it is (a newline in a foreign producer's name would be escaped).
    assert_eq!(done["span"]["job"], "logs.hello", "{done}");
    assert_eq!(done["span"]["queue"], "logs", "{done}");
    assert!(events
        .iter()
        .any(|e| e["fields"]["message"] == "worker started"));

    let (ok, stderr) = run_child(&env, "text");
    assert!(ok, "{stderr}");
    assert!(stderr.contains("job completed"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes into a pipe: {stderr}"
    );

    // A malformed trace context is refused before anything is written.
    let bad = NewJob::of::<hello>(&1)
        .expect("encode")
        .traceparent("00-not-a-trace-01");
    let err = env
        .client
        .enqueue_job(bad)
        .await
        .expect_err("bad traceparent");
    assert_eq!(err.kind(), ErrorKind::InvalidJob, "{err}");

    let (ok, stderr) = run_child(&env, "yaml");
    assert!(!ok);
    assert!(
        stderr.contains("QUEUE_LOG_FORMAT must be text or json"),
        "{stderr}"
    );
}
