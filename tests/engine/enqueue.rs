//! Enqueue: batches, idempotency (SET NX), validation, delayed jobs, unreachable Redis.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::{Client, Error, JobType, NewJob};

struct Ping;
impl JobType for Ping {
    const NAME: &'static str = "test.ping";
    type Args = u32;
}

#[tokio::test]
async fn batch_enqueue_puts_every_job_in_the_pending_set() {
    let env = Env::start().await;
    let jobs: Vec<NewJob> = (0..2500u32)
        .map(|i| NewJob::of::<Ping>(&i).expect("encode").queue("bulk"))
        .collect();
    let out = env.client.enqueue_batch(jobs).await.expect("enqueue");
    assert_eq!(out.len(), 2500);
    assert!(out.iter().all(|e| !e.duplicate && e.queue == "bulk"));
    let mut ids: Vec<String> = out.iter().map(|e| e.id.as_str().to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2500, "ids are unique");
    let counts = env.client.counts("bulk").await.expect("counts");
    assert_eq!(counts.pending, 2500);
    assert_eq!(counts.scheduled, 0);
}

#[tokio::test]
async fn same_unique_key_from_32_tasks_creates_exactly_one_job() {
    let env = Env::start().await;
    let mut handles = Vec::new();
    for i in 0..32u32 {
        let client = env.client.clone();
        handles.push(tokio::spawn(async move {
            client
                .enqueue_job(
                    NewJob::of::<Ping>(&i)
                        .expect("encode")
                        .unique("order:42", Duration::from_secs(60)),
                )
                .await
                .expect("enqueue")
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.expect("task"));
    }
    let created: Vec<_> = results.iter().filter(|e| !e.duplicate).collect();
    assert_eq!(created.len(), 1, "exactly one caller created the job");
    assert!(
        results.iter().all(|e| e.id == created[0].id),
        "every caller got the first job's id"
    );
    assert_eq!(
        env.client.counts("default").await.expect("counts").pending,
        1
    );
}

#[tokio::test]
async fn unique_key_is_free_again_after_its_ttl() {
    let env = Env::start().await;
    let a = env
        .client
        .enqueue_job(
            NewJob::of::<Ping>(&1)
                .expect("encode")
                .unique("k", Duration::from_secs(600)),
        )
        .await
        .expect("enqueue");
    let mut raw = env.raw().await;
    let key = env.client.keys("default").expect("keys").unique("k");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .expect("pttl");
    assert!(
        ttl > 0 && ttl <= 600_000,
        "the unique key carries its TTL ({ttl})"
    );
    let dup = env
        .client
        .enqueue_job(
            NewJob::of::<Ping>(&3)
                .expect("encode")
                .unique("k", Duration::from_secs(600)),
        )
        .await
        .expect("enqueue");
    assert!(dup.duplicate && dup.id == a.id, "held while the key lives");
    // The TTL runs out (seeded: shortened to 1 ms in Redis instead of waiting ten minutes).
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(1)
        .query_async(&mut raw)
        .await
        .expect("pexpire");
    common::eventually(Duration::from_secs(2), "unique key to expire", || {
        let mut raw = raw.clone();
        let key = key.clone();
        async move {
            !redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<bool>(&mut raw)
                .await
                .unwrap_or(true)
        }
    })
    .await;
    let b = env
        .client
        .enqueue_job(
            NewJob::of::<Ping>(&2)
                .expect("encode")
                .unique("k", Duration::from_secs(5)),
        )
        .await
        .expect("enqueue");
    assert!(!b.duplicate);
    assert_ne!(a.id, b.id);
}

#[tokio::test]
async fn duplicates_inside_one_batch_share_the_first_id() {
    let env = Env::start().await;
    let jobs = (0..3u32)
        .map(|i| {
            NewJob::of::<Ping>(&i)
                .expect("encode")
                .unique("same", Duration::from_secs(60))
        })
        .collect();
    let out = env.client.enqueue_batch(jobs).await.expect("enqueue");
    assert!(!out[0].duplicate && out[1].duplicate && out[2].duplicate);
    assert!(out.iter().all(|e| e.id == out[0].id));
}

#[tokio::test]
async fn unique_for_without_a_key_dedups_by_name_and_arguments() {
    let env = Env::start().await;
    let job = |i: u32| {
        NewJob::of::<Ping>(&i)
            .expect("encode")
            .unique_for_args(Duration::from_secs(60))
    };
    let a = env.client.enqueue_job(job(7)).await.expect("enqueue");
    let b = env.client.enqueue_job(job(7)).await.expect("enqueue");
    let c = env.client.enqueue_job(job(8)).await.expect("enqueue");
    assert!(!a.duplicate && b.duplicate && !c.duplicate);
    assert_eq!(a.id, b.id);
}

#[tokio::test]
async fn delayed_jobs_wait_in_the_scheduled_set() {
    let env = Env::start().await;
    env.client
        .enqueue_job(
            NewJob::of::<Ping>(&1)
                .expect("encode")
                .delay(Duration::from_secs(60)),
        )
        .await
        .expect("enqueue");
    let c = env.client.counts("default").await.expect("counts");
    assert_eq!((c.pending, c.scheduled), (0, 1));
}

#[tokio::test]
async fn invalid_jobs_are_rejected_before_anything_is_sent() {
    let env = Env::start().await;
    let big = NewJob::raw("x", vec![0u8; queue::wire::DEFAULT_MAX_PAYLOAD + 1]);
    assert!(matches!(
        env.client.enqueue_job(big).await,
        Err(Error::PayloadTooLarge { .. })
    ));
    let bad_queue = NewJob::raw("x", vec![0xc0]).queue("has space");
    assert!(matches!(
        env.client.enqueue_job(bad_queue).await,
        Err(Error::Config(_))
    ));
    let no_name = NewJob::raw("", vec![0xc0]);
    assert!(matches!(
        env.client.enqueue_job(no_name).await,
        Err(Error::InvalidJob(_))
    ));
    let zero = NewJob::raw("x", vec![0xc0]).max_attempts(0);
    assert!(matches!(
        env.client.enqueue_job(zero).await,
        Err(Error::InvalidJob(_))
    ));
    let no_ttl = NewJob::raw("x", vec![0xc0]).unique("k", Duration::ZERO);
    assert!(matches!(
        env.client.enqueue_job(no_ttl).await,
        Err(Error::InvalidJob(_))
    ));
    assert_eq!(
        env.client.counts("default").await.expect("counts").pending,
        0,
        "nothing was written"
    );
}

#[tokio::test]
async fn unreachable_redis_is_a_typed_retryable_error() {
    // A port nothing listens on: bind, read the port, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = Client::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect_err("must fail");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = Client::connect("not a url").await.expect_err("must fail");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}

/// A server at `maxmemory` under `noeviction` refuses the enqueue with a typed, non-retryable
/// out-of-memory error that keeps the Redis error as its source.
#[tokio::test]
async fn an_out_of_memory_server_is_a_typed_error() {
    use queue::testing::RedisServerOptions;
    let server = common::server_with(RedisServerOptions {
        args: ["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let client = Client::connect(&common::url_of(&server))
        .await
        .expect("connect");
    // Fill the server past its limit with jobs until it refuses one batch.
    let mut refused = None;
    for _ in 0..1000 {
        let jobs: Vec<NewJob> = (0..100u32)
            .map(|i| NewJob::of::<Ping>(&i).expect("encode").queue("full"))
            .collect();
        if let Err(e) = client.enqueue_batch(jobs).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("a 2 MB server refuses writes before 100,000 jobs");
    assert_eq!(err.kind(), queue::ErrorKind::OutOfMemory, "{err}");
    assert!(!err.is_retryable());
    let source = std::error::Error::source(&err).expect("keeps its source");
    assert!(
        source.downcast_ref::<redis::RedisError>().is_some(),
        "{source:?}"
    );
}

/// An ACL user without the right to run scripts gets a typed permission error.
#[tokio::test]
async fn a_user_without_permission_is_a_typed_error() {
    let env = Env::start().await;
    let url = env.user("reader", &["~* +@all -@scripting"]).await;
    let err = match Client::connect(&url).await {
        // Connecting loads the scripts, which this user may not do.
        Err(e) => e,
        Ok(client) => client
            .enqueue_job(NewJob::of::<Ping>(&1).expect("encode"))
            .await
            .expect_err("no scripting"),
    };
    assert_eq!(err.kind(), queue::ErrorKind::Permission, "{err}");
    assert!(!err.is_retryable());
}

/// The enqueue script as a producer in another language runs it (docs/PROTOCOL.md: the
/// prelude, the shared library and the script, concatenated), with hand-made members.
fn enqueue_source() -> String {
    [
        include_str!("../../queue-core/src/prelude.lua"),
        include_str!("../../queue-core/src/engine/scripts/lib/enqueue_jobs.lua"),
        include_str!("../../queue-core/src/engine/scripts/enqueue.lua"),
    ]
    .concat()
}

async fn raw_enqueue(env: &Env, member: &[u8]) -> redis::RedisResult<redis::Value> {
    let source = enqueue_source();
    let keys = env.client.keys("raw").expect("keys");
    redis::cmd("EVAL")
        .arg(source)
        .arg(5)
        .arg(keys.pending())
        .arg(keys.scheduled())
        .arg(keys.wake())
        .arg(keys.meta())
        .arg(keys.events())
        .arg(1)
        .arg(member)
        .arg(0)
        .arg(0)
        .arg(0)
        .query_async(&mut env.raw().await)
        .await
}

/// Target 4 of the hostile-input issue: the enqueue script refuses a member whose header does
/// not hold (a lowercase id, which would run but never be found; a prefix that is not two
/// lowercase hex digits; a non-canonical ULID); the worker side refuses an envelope of a later
/// wire version and a prefix that disagrees with the envelope's priority.
#[tokio::test]
async fn the_enqueue_script_checks_the_member_header() {
    let env = Env::start().await;
    let job = queue::wire::Job::new(
        queue::JobId::generate(),
        "raw",
        "test.ping",
        queue::wire::encode_value(&1u32, "args").expect("encode"),
        common::now_ms(),
    );
    let good = queue::wire::encode_member(&job).expect("encode");
    raw_enqueue(&env, &good)
        .await
        .expect("a canonical member is taken");
    let mut lower = good.clone();
    lower[2..28].make_ascii_lowercase();
    let mut upper_prefix = good.clone();
    upper_prefix[..2].copy_from_slice(b"FF");
    let mut not_ulid = good.clone();
    not_ulid[2] = b'I';
    for (what, member) in [
        ("lowercase id", lower),
        ("uppercase prefix", upper_prefix),
        ("a letter Crockford leaves out", not_ulid),
    ] {
        let err = raw_enqueue(&env, &member).await.expect_err(what);
        assert_eq!(err.code(), Some("QUEUE"), "{what}: {err}");
    }
    // A later wire version, and a prefix that disagrees with the envelope.
    let mut v2 = job.clone();
    v2.version = queue::wire::WIRE_VERSION + 1;
    let v2 = queue::wire::encode_member(&v2).expect("encode");
    match queue::wire::decode_member(&v2, "raw") {
        Err(Error::Decode { what, .. }) => assert_eq!(what, queue::wire::UNSUPPORTED_VERSION),
        other => panic!("a later version decoded: {other:?}"),
    }
    let mut wrong = good.clone();
    wrong[..2].copy_from_slice(queue::wire::priority_prefix(9).as_bytes());
    assert!(queue::wire::decode_member(&wrong, "raw").is_err());
}

/// A batch is all or nothing even when its last job is what fails the checks (a TTL that is
/// no whole number would fail in `SET PX`, after the first job's key was set); a cap field in
/// meta that is no sane size counts as the default, so it cannot switch the cap off.
#[tokio::test]
async fn the_enqueue_script_refuses_before_it_writes() {
    let env = Env::start().await;
    let source = enqueue_source();
    let keys = env.client.keys("raw").expect("keys");
    let member = |n: u32| {
        let job = queue::wire::Job::new(
            queue::JobId::generate(),
            "raw",
            "test.ping",
            queue::wire::encode_value(&n, "args").expect("encode"),
            common::now_ms(),
        );
        queue::wire::encode_member(&job).expect("encode")
    };
    let mut raw = env.raw().await;
    for ttl in ["1.5", "1e3", " 5", "0", "-1"] {
        let err = redis::cmd("EVAL")
            .arg(&source)
            .arg(6)
            .arg(keys.pending())
            .arg(keys.scheduled())
            .arg(keys.wake())
            .arg(keys.meta())
            .arg(keys.events())
            .arg(keys.unique("a"))
            .arg(2)
            .arg(member(1))
            .arg(0)
            .arg(1)
            .arg(60_000)
            .arg(member(2))
            .arg(0)
            .arg(1)
            .arg(ttl)
            .query_async::<redis::Value>(&mut raw)
            .await
            .expect_err(ttl);
        assert_eq!(err.code(), Some("QUEUE"), "ttl {ttl:?}: {err}");
        let (pending, unique): (u64, bool) = redis::pipe()
            .zcard(keys.pending())
            .exists(keys.unique("a"))
            .query_async(&mut raw)
            .await
            .expect("state");
        assert_eq!(
            (pending, unique),
            (0, false),
            "ttl {ttl:?}: nothing written"
        );
    }
    let big = {
        let job = queue::wire::Job::new(
            queue::JobId::generate(),
            "raw",
            "test.ping",
            vec![0u8; queue::wire::DEFAULT_MAX_PAYLOAD],
            common::now_ms(),
        );
        queue::wire::encode_member(&job).expect("encode")
    };
    for cap in ["nan", "inf", "0", "-1", "1.5", "1e12"] {
        redis::cmd("HSET")
            .arg(keys.meta())
            .arg("max_payload")
            .arg(cap)
            .query_async::<()>(&mut raw)
            .await
            .expect("hset");
        let err = raw_enqueue(&env, &big).await.expect_err(cap);
        assert_eq!(err.code(), Some("QUEUE"), "cap {cap:?}: {err}");
    }
}

/// A server that may evict keys loses whole queues without a word, so a client refuses it
/// (with the policy named and the way out), unless told the instance is a cache; a server
/// without `maxmemory` never evicts, whatever its policy.
#[tokio::test]
async fn an_evicting_server_is_refused_unless_allowed() {
    use queue::testing::RedisServerOptions;
    for policy in ["allkeys-lru", "volatile-ttl"] {
        let server = common::server_with(RedisServerOptions {
            args: ["--maxmemory", "100mb", "--maxmemory-policy", policy]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        });
        let err = Client::connect(&common::url_of(&server))
            .await
            .expect_err("an evicting server is refused");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(policy) && message.contains("noeviction"),
            "{message}"
        );
        let mut config = queue::ClientConfig::new(common::url_of(&server));
        config.allow_eviction = true;
        Client::connect_with(config)
            .await
            .expect("allowed for a cache instance");
    }
    let unlimited = common::server_with(RedisServerOptions {
        args: ["--maxmemory-policy", "allkeys-lru"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    Client::connect(&common::url_of(&unlimited))
        .await
        .expect("no maxmemory, no eviction");
}

/// `INFO` is in `@dangerous`: the usual `+@all -@dangerous` user connects and enqueues, the
/// version and eviction checks skipped with a warning.
#[tokio::test]
async fn a_user_without_dangerous_commands_connects_and_enqueues() {
    let env = Env::start().await;
    let url = env.user("app", &["~* &* +@all -@dangerous"]).await;
    let client = Client::connect(&url).await.expect("connects without INFO");
    client
        .enqueue_job(NewJob::of::<Ping>(&1).expect("encode"))
        .await
        .expect("enqueues");
}

/// `Durability::Replicated`: an acknowledged enqueue is on the replica, so it survives the
/// primary's death and the replica's promotion; with the replica frozen the enqueue is applied
/// but reported as not durable, within its timeout.
#[tokio::test]
async fn replicated_enqueues_survive_the_loss_of_the_primary() {
    use queue::testing::RedisServerOptions;
    let primary = common::server();
    let port = primary.port().expect("tcp").to_string();
    let replica = common::server_with(RedisServerOptions {
        args: ["--replicaof", "127.0.0.1", port.as_str()]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let mut replica_con = redis::Client::open(common::admin_url_of(&replica))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("replica connection");
    common::eventually(Duration::from_secs(20), "the replica to sync", || {
        let mut con = replica_con.clone();
        async move {
            redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut con)
                .await
                .is_ok_and(|i| i.contains("master_link_status:up"))
        }
    })
    .await;
    let mut config = queue::ClientConfig::new(common::url_of(&primary));
    config.durability = queue::Durability::Replicated {
        replicas: 1,
        timeout: Duration::from_secs(10),
    };
    let client = Client::connect_with(config.clone()).await.expect("connect");
    let jobs: Vec<NewJob> = (0..200u32)
        .map(|i| NewJob::of::<Ping>(&i).expect("encode").queue("durable"))
        .collect();
    let acked = client
        .enqueue_batch(jobs)
        .await
        .expect("acknowledged by a replica");

    // With the replica frozen, the same enqueue is applied but not confirmed in time.
    let impatient = Client::connect_with(queue::ClientConfig {
        durability: queue::Durability::Replicated {
            replicas: 1,
            timeout: Duration::from_millis(300),
        },
        ..config
    })
    .await
    .expect("connect");
    let frozen = std::process::Command::new("kill")
        .args(["-STOP", &replica.pid().to_string()])
        .status()
        .expect("kill");
    assert!(frozen.success());
    let err = impatient
        .enqueue_job(NewJob::of::<Ping>(&999).expect("encode").queue("other"))
        .await
        .expect_err("no replica confirms");
    let thawed = std::process::Command::new("kill")
        .args(["-CONT", &replica.pid().to_string()])
        .status()
        .expect("kill");
    assert!(thawed.success());
    assert_eq!(err.kind(), queue::ErrorKind::NotDurable, "{err}");
    assert!(
        matches!(
            err,
            Error::NotDurable {
                wanted: 1,
                confirmed: 0,
                ..
            }
        ),
        "{err:?}"
    );

    // The primary dies; the replica is promoted and has every acknowledged job.
    drop(primary);
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut replica_con)
        .await
        .expect("promote");
    let promoted = Client::connect(&common::url_of(&replica))
        .await
        .expect("connect");
    let counts = promoted.counts("durable").await.expect("counts");
    assert_eq!(counts.pending as usize, acked.len());
}

/// `Durability::Fsync` needs WAITAOF: refused at connect, with the alternatives named, on a
/// server older than 7.2 (accepted on a newer one).
#[tokio::test]
async fn fsync_durability_is_refused_where_the_server_cannot_give_it() {
    let env = Env::start().await;
    let mut con = env.raw().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .expect("info");
    let version: Vec<u32> = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .expect("version")
        .trim()
        .split('.')
        .map(|p| p.parse().expect("number"))
        .collect();
    let mut config = queue::ClientConfig::new(env.url());
    config.durability = queue::Durability::Fsync {
        replicas: 0,
        timeout: Duration::from_secs(1),
    };
    let connected = Client::connect_with(config).await;
    if (version[0], version[1]) < (7, 2) {
        let err = connected.expect_err("no WAITAOF before 7.2");
        assert_eq!(err.kind(), queue::ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("WAITAOF"), "{err}");
    } else {
        connected.expect("WAITAOF is there");
    }
}
