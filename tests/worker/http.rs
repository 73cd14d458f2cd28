//! A worker's HTTP endpoints (`WorkerBuilder::serve_http`): `/metrics` in Prometheus text
//! format with the job counters, histograms and queue depth, `/livez` and `/readyz`, and how
//! they answer while Redis is frozen.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::{job, JobError, JobState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[job(name = "http.ok", queue = "hm")]
async fn ok(_n: u32) -> Result<(), JobError> {
    Ok(())
}

/// A redis-server stopped with SIGSTOP, continued on drop (a failing assertion included).
struct Frozen(String);

impl Frozen {
    fn new(pid: u32) -> Frozen {
        let f = Frozen(pid.to_string());
        f.signal("-STOP");
        f
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.0])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.0);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

/// `GET path` over a plain TCP connection: (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.expect("read");
        reply
    };
    let reply = common::bounded(Duration::from_secs(10), "http get", exchange).await;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

type Running = tokio::task::JoinHandle<Result<queue::worker::Report, queue::worker::Error>>;

/// A worker of queue `hm` serving its endpoints on a free port: (address, stop, the run).
async fn http_worker(
    env: &Env,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Running,
) {
    let worker = queue::WorkerBuilder::with_client(env.client.clone())
        .registry(common::registry(&["http.ok"]))
        .queue("hm", 1)
        .serve_http("127.0.0.1:0")
        .build()
        .await
        .expect("build");
    let addr = worker.http_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    (addr, stop, running)
}

#[tokio::test]
async fn metrics_livez_and_readyz() {
    let env = Env::start().await;
    let (addr, stop, running) = http_worker(&env).await;

    assert_eq!(get(addr, "/livez").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    for n in 0..3 {
        let id = env.client.enqueue::<ok>(&n).await.expect("enqueue").id;
        let out = env
            .client
            .wait_for("hm", &id, Duration::from_secs(30))
            .await;
        assert_eq!(out.expect("wait").state, JobState::Completed);
    }
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    for line in [
        r#"queue_jobs_total{queue="hm",job="http.ok",outcome="completed"} 3"#,
        r#"queue_jobs_total{queue="hm",job="http.ok",outcome="failed"} 0"#,
        r#"queue_job_run_seconds_bucket{le="+Inf",queue="hm",job="http.ok"} 3"#,
        r#"queue_job_run_seconds_count{queue="hm",job="http.ok"} 3"#,
        r#"queue_job_wait_seconds_count{queue="hm",job="http.ok"} 3"#,
        r#"queue_depth{queue="hm",state="pending"} 0"#,
        r#"queue_worker_concurrency 5"#,
        r#"queue_redis_up 1"#,
        "# EOF",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line:?} missing from:\n{body}"
        );
    }
    assert!(
        body.contains("# TYPE queue_job_run_seconds histogram"),
        "{body}"
    );
    assert!(body.contains("queue_redis_roundtrip_seconds "), "{body}");
    assert!(body.contains("queue_redis_memory_used_bytes "), "{body}");

    // Every metric docs/alerts.yml alerts on is one the worker serves.
    let alerts = include_str!("../../docs/alerts.yml");
    let mut named = 0;
    for (i, _) in alerts.match_indices("queue_") {
        let name: String = alerts[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if name.len() > "queue_".len() && alerts[..i].ends_with(|c: char| !c.is_alphanumeric()) {
            named += 1;
            assert!(
                body.lines().any(|l| l.starts_with(&name)),
                "docs/alerts.yml uses {name}, which /metrics does not serve:\n{body}"
            );
        }
    }
    assert!(named >= 6, "{named} metric names in docs/alerts.yml");

    // Redis frozen: the worker is alive (a restart would not help) but not ready.
    let frozen = Frozen::new(env.server.pid());
    let (ready, why) = get(addr, "/readyz").await;
    let (live, _) = get(addr, "/livez").await;
    let (_, metrics) = get(addr, "/metrics").await;
    drop(frozen);
    assert_eq!(ready, 503, "{why}");
    assert!(why.contains("Redis"), "{why}");
    assert_eq!(live, 200);
    assert!(
        metrics.lines().any(|l| l == "queue_redis_up 0"),
        "{metrics}"
    );

    let _ = stop.send(());
    common::bounded(Duration::from_secs(30), "worker shutdown", running)
        .await
        .expect("join")
        .expect("run");
}

/// A wrong address fails the build, with the value in the message.
#[tokio::test]
async fn a_bad_http_address_is_a_config_error() {
    let env = Env::start().await;
    let err = queue::WorkerBuilder::with_client(env.client.clone())
        .registry(common::registry(&["http.ok"]))
        .serve_http("nowhere:port")
        .build()
        .await
        .expect_err("bad address");
    assert!(err.to_string().contains("nowhere:port"), "{err}");
}

/// A client that opened a connection and never finished its request does not hold the
/// worker's shutdown: the endpoints get a bounded grace (5 s), then close.
#[tokio::test]
async fn a_stuck_http_client_does_not_hold_the_shutdown() {
    let env = Env::start().await;
    let (addr, stop, running) = http_worker(&env).await;
    assert_eq!(get(addr, "/livez").await.0, 200);
    // Half a request, held open.
    let mut stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stuck
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let _ = stop.send(());
    // Under hyper's own header timeout (30 s), which would otherwise end it.
    common::bounded(Duration::from_secs(20), "worker shutdown", running)
        .await
        .expect("join")
        .expect("run");
    drop(stuck);
}
