//! Target 6 of the hostile-input issue: `rediss://` through rustls, against a TLS-only
//! redis-server whose certificates the fixture makes with openssl: a private CA, mutual TLS,
//! and a wrong CA failing verification with a clear error.

use crate::common;

use std::time::Duration;

use queue::broker::{Alive, Broker};
use queue::testing::{RedisServer, RedisServerOptions};
use queue::{Client, ClientConfig, ErrorKind, JobType, NewJob, TlsFiles};

struct Ping;
impl JobType for Ping {
    const NAME: &'static str = "test.ping";
    type Args = u32;
}

fn tls_server(args: &[&str]) -> RedisServer {
    common::server_with(RedisServerOptions {
        tls: true,
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    })
}

fn config(server: &RedisServer, tls: TlsFiles) -> ClientConfig {
    let mut c = ClientConfig::new(common::url_of(server));
    c.tls = tls;
    c.connect_timeout = Duration::from_secs(5);
    c
}

fn ca_only(server: &RedisServer) -> TlsFiles {
    TlsFiles {
        ca_file: server.tls_files().expect("tls").ca_file.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_private_ca_carries_every_connection_of_the_client() {
    let server = tls_server(&[]);
    assert!(server.url().starts_with("rediss://"));
    let client = Client::connect_with(config(&server, ca_only(&server)))
        .await
        .expect("connects over TLS with the CA");
    let e = client
        .enqueue_job(NewJob::of::<Ping>(&7).expect("encode"))
        .await
        .expect("enqueue over TLS");
    let broker = Broker::new(client.clone(), "default").expect("broker");
    let f = broker
        .fetch(1, Duration::from_secs(30))
        .await
        .expect("fetch");
    assert_eq!(f.jobs.len(), 1);
    assert_eq!(f.jobs[0].lease.id, e.id);
    // The connections of their own (a worker's liveness subscription) take the same path.
    let channel = broker.alive_channel(1).unwrap_or_else(|| "queue:x".into());
    let _alive = Alive::subscribe(&client, &[channel])
        .await
        .expect("a pub/sub connection over TLS");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let server = tls_server(&["--tls-auth-clients", "yes"]);
    let files = server.tls_files().expect("tls").clone();
    Client::connect_with(config(&server, files))
        .await
        .expect("connects with its certificate");
    let err = Client::connect_with(config(&server, ca_only(&server)))
        .await
        .expect_err("refused without a client certificate");
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    // A certificate without its key is a configuration error, before any connection.
    let half = TlsFiles {
        key_file: None,
        ..server.tls_files().expect("tls").clone()
    };
    let err = Client::connect_with(config(&server, half))
        .await
        .expect_err("half a client identity");
    assert!(matches!(err, queue::Error::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_wrong_ca_fails_verification_with_a_clear_error() {
    let server = tls_server(&[]);
    let other = tls_server(&[]);
    let err = Client::connect_with(config(&server, ca_only(&other)))
        .await
        .expect_err("another CA's server");
    let message = format!("{err}").to_lowercase();
    assert!(message.contains("certificate"), "{message}");
    // Another connection attempt meets the same certificate: not worth retrying.
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert!(!err.is_retryable());
    // The system's roots do not know a private CA either.
    let err = Client::connect_with(config(&server, TlsFiles::default()))
        .await
        .expect_err("no CA given");
    assert!(
        format!("{err}").to_lowercase().contains("certificate"),
        "{err}"
    );
    // A CA file that holds no certificate is a configuration error that names it.
    let dir = std::env::temp_dir().join(format!("queue-tls-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty = dir.join("ca.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let files = TlsFiles {
        ca_file: Some(empty.clone()),
        ..TlsFiles::default()
    };
    let err = Client::connect_with(config(&server, files))
        .await
        .expect_err("a CA file without a certificate");
    assert!(matches!(err, queue::Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );
    assert!(err.to_string().contains(&*empty.to_string_lossy()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    // TLS files with a plain URL are a mistake, said as such.
    let plain = server.url().replacen("rediss://", "redis://", 1);
    let mut c = config(&server, ca_only(&server));
    c.url = plain;
    let err = Client::connect_with(c).await.expect_err("plain URL");
    assert!(format!("{err}").contains("rediss://"), "{err}");
}
