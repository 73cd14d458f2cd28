//! Secrets never show: against a password-protected redis-server, every URL form the client
//! accepts (`redis://:pw@`, `redis://default:pw@`, `redis+unix://...?pass=`) connects, and the
//! configuration's `Debug`, the errors of a wrong password and of a closed address (`Display`
//! and `Debug`), and the logs of a worker whose Redis goes away never hold the password.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::testing::{RedisServer, RedisServerOptions};
use queue::{job, Client, ClientConfig, ErrorKind, JobError, WorkerBuilder};

/// The server's password.
const PW: &str = "s3cr3t-pw";
/// A wrong password: a secret too (it may be a real password of another server).
const WRONG: &str = "wr0ng-pw-7";

#[job(name = "secrets.noop", queue = "secrets")]
async fn noop(_n: u32) -> Result<(), JobError> {
    Ok(())
}

fn assert_hidden(what: &str, shown: &str) {
    assert!(
        !shown.contains(PW) && !shown.contains(WRONG),
        "{what} shows a password: {shown}"
    );
}

fn protected(unix_socket: bool) -> RedisServer {
    RedisServer::start_with(RedisServerOptions {
        unix_socket,
        args: vec!["--requirepass".into(), PW.into()],
        ..Default::default()
    })
    .expect("redis-server must be installed (apt-get install redis-server)")
}

/// The URL of `server` with `password`, for user `user` (`None`: the password alone).
fn url_with(server: &RedisServer, user: Option<&str>, password: &str) -> String {
    match server.port() {
        Some(port) => format!("redis://{}:{password}@127.0.0.1:{port}", user.unwrap_or("")),
        None => match user {
            Some(user) => format!("{}?user={user}&pass={password}", server.url()),
            None => format!("{}?pass={password}", server.url()),
        },
    }
}

/// A URL with the right password where nothing listens.
fn closed_url(unix_socket: bool) -> String {
    if unix_socket {
        // A directory that does not exist: no server can be listening in it.
        let sock = std::env::temp_dir()
            .join(format!("queue-secrets-none-{}", std::process::id()))
            .join("nobody.sock");
        format!("redis+unix://{}?pass={PW}", sock.display())
    } else {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        format!("redis://:{PW}@127.0.0.1:{port}")
    }
}

fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// Every way an error can be shown: `Display`, `Debug`, pretty `Debug`, and its sources.
fn shown(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut all = vec![e.to_string(), format!("{e:?}"), format!("{e:#?}")];
    let mut source = e.source();
    while let Some(s) = source {
        all.push(s.to_string());
        all.push(format!("{s:?}"));
        source = s.source();
    }
    all
}

async fn check_url_forms(unix_socket: bool) {
    let server = protected(unix_socket);
    for user in [None, Some("default")] {
        let url = url_with(&server, user, PW);
        let c = config(&url);
        assert_hidden("ClientConfig's Debug", &format!("{c:?}"));
        assert_hidden("ClientConfig's pretty Debug", &format!("{c:#?}"));
        assert!(format!("{c:?}").contains("***"), "{c:?}");
        assert_hidden(
            "WorkerBuilder's Debug",
            &format!("{:?}", WorkerBuilder::new(url.as_str())),
        );

        let client = Client::connect_with(c)
            .await
            .unwrap_or_else(|e| panic!("{url:?} connects: {e}\nlog:\n{}", server.log()));
        assert_hidden("Client's Debug", &format!("{client:?}"));
        assert_hidden("Client::config's Debug", &format!("{:?}", client.config()));
        client
            .enqueue_job(queue::NewJob::raw("secrets.noop", vec![0x01]).queue("secrets"))
            .await
            .expect("enqueue with the right password");

        for (bad, kind) in [
            (url_with(&server, user, WRONG), ErrorKind::Auth),
            (closed_url(unix_socket), ErrorKind::Connection),
        ] {
            assert_hidden("a bad URL's config", &format!("{:?}", config(&bad)));
            let e = Client::connect_with(config(&bad))
                .await
                .expect_err("a wrong password or a closed address fails");
            assert_eq!(e.kind(), kind, "{e}");
            for s in shown(&e) {
                assert_hidden("a client error", &s);
            }
            let e = WorkerBuilder::new(bad.as_str())
                .registry(common::registry(&["secrets.noop"]))
                .queue("secrets", 1)
                .build()
                .await
                .expect_err("a worker on a bad URL does not start");
            for s in shown(&e) {
                assert_hidden("a worker error", &s);
            }
        }
    }
}

#[tokio::test]
async fn tcp_urls_with_a_password_never_show_it() {
    common::init_tracing();
    check_url_forms(false).await;
}

#[tokio::test]
async fn unix_socket_urls_with_a_password_never_show_it() {
    common::init_tracing();
    check_url_forms(true).await;
}

/// The body of a child process whose logs the parent greps; does nothing in a normal run.
/// It logs every level to stderr, logs failed connections as a careless application would
/// (the error's `Display` and `Debug`), then runs a worker until it is killed.
#[test]
fn child_logging_worker() {
    let Ok(url) = std::env::var("QUEUE_SECRETS_CHILD_URL") else {
        return;
    };
    let wrong = std::env::var("QUEUE_SECRETS_CHILD_WRONG").expect("wrong URL");
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        match Client::connect_with(config(&wrong)).await {
            Ok(_) => panic!("the wrong password connected"),
            Err(e) => tracing::error!(error = %e, debug = ?e, "connect failed"),
        }
        let builder = WorkerBuilder::new(url.as_str())
            .registry(common::registry(&["secrets.noop"]))
            .queue("secrets", 1)
            .lease(Duration::from_millis(1000))
            .heartbeat(Duration::from_millis(200));
        tracing::info!(builder = ?builder, "building");
        let worker = builder.build().await.expect("build");
        tracing::info!(worker = ?worker, "WORKER UP");
        let _ = worker.run(std::future::pending()).await;
    });
}

#[tokio::test]
async fn worker_logs_never_show_the_password() {
    for unix_socket in [false, true] {
        let server = protected(unix_socket);
        let url = url_with(&server, Some("default"), PW);
        let wrong = url_with(&server, Some("default"), WRONG);
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .arg(common::test_name(module_path!(), "child_logging_worker"))
            .args(["--exact", "--nocapture", "--test-threads=1"])
            .env("QUEUE_SECRETS_CHILD_URL", &url)
            .env("QUEUE_SECRETS_CHILD_WRONG", &wrong)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child worker");
        let mut stderr = child.stderr.take().expect("stderr");
        let guard = common::Guard(vec![child]);
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })
        };
        let has = |what: &'static str| {
            let log = log.clone();
            move || {
                let found = log.lock().unwrap_or_else(|p| p.into_inner()).contains(what);
                async move { found }
            }
        };
        common::eventually(
            Duration::from_secs(20),
            "the child worker up",
            has("WORKER UP"),
        )
        .await;
        // Redis goes away under the running worker: it logs its failed calls and reconnects.
        drop(server);
        common::eventually(
            Duration::from_secs(20),
            "the worker to log the outage",
            has("retrying with backoff until Redis answers"),
        )
        .await;
        // A little longer, for the reconnect attempts of the heartbeat and the fetch loop.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(guard);
        reader.join().expect("reader");
        let log = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(log.contains("connect failed"), "{log}");
        assert!(
            log.contains("***"),
            "the URL is in the logs, redacted: {log}"
        );
        assert_hidden("the child's log", &log);
    }
}
