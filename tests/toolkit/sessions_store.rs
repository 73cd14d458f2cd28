//! Sessions against a real Redis: ids never stored, rotation, fixation, idle and absolute
//! expiry, concurrent writes, per-user listing and logout, index cleanup, 10,000 sessions.

use crate::common;

use std::time::Duration;

use common::Env;
use queue::session::SessionConfig;
use queue::session::SessionId;
use queue::session::Sessions;
use queue::session::Update;
use serde_json::json;

fn kv(k: &str, v: serde_json::Value) -> (String, serde_json::Value) {
    (k.to_string(), v)
}

#[tokio::test]
async fn create_read_write_destroy_and_the_id_is_never_stored() {
    let env = Env::start().await;
    let s = Sessions::new(env.client.clone()).expect("sessions");
    let (id, session) = s
        .create(
            Some("user:42"),
            [kv("cart", json!([1, 2])), kv("theme", json!("dark"))],
        )
        .await
        .expect("create");
    assert_eq!(session.user.as_deref(), Some("user:42"));
    assert_eq!(session.get::<Vec<u32>>("cart"), Some(vec![1, 2]));
    assert_eq!(session.version, 1);
    assert!(
        session.expires_ms - session.created_ms == 24 * 3600 * 1000,
        "absolute timeout 24 h by default"
    );

    // Redis holds the id's hash, never the id.
    let mut raw = env.raw().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .expect("keys");
    for k in &keys {
        assert!(!k.contains(id.expose()), "{k}");
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(k)
            .query_async(&mut raw)
            .await
            .expect("dump");
        assert!(!String::from_utf8_lossy(&dump).contains(id.expose()));
    }
    assert!(keys.iter().any(|k| k.ends_with(&id.hash())));

    assert_eq!(
        s.merge(id.expose(), [kv("theme", json!("light"))], &["cart"])
            .await
            .expect("merge"),
        Some(2)
    );
    let now = s.get(id.expose()).await.expect("get").expect("live");
    assert_eq!(now.get::<String>("theme").as_deref(), Some("light"));
    assert!(!now.data.contains_key("cart"));
    assert!(s.destroy(id.expose()).await.expect("destroy"));
    assert!(s.get(id.expose()).await.expect("get").is_none());
    assert!(!s.destroy(id.expose()).await.expect("destroy again"));
}

#[tokio::test]
async fn an_id_the_server_never_issued_is_never_adopted() {
    let env = Env::start().await;
    let s = Sessions::new(env.client.clone()).expect("sessions");
    let forged = SessionId::generate().expect("rng");
    assert!(s.get(forged.expose()).await.expect("get").is_none());
    assert_eq!(
        s.merge(forged.expose(), [kv("admin", json!(true))], &[])
            .await
            .expect("merge"),
        None
    );
    assert_eq!(
        s.update(forged.expose(), 1, [kv("admin", json!(true))])
            .await
            .expect("update"),
        Update::NotFound
    );
    assert!(s.rotate(forged.expose()).await.expect("rotate").is_none());
    assert!(s.get("not-even-an-id").await.expect("get").is_none());
    let mut raw = env.raw().await;
    let n: u64 = redis::cmd("DBSIZE")
        .query_async(&mut raw)
        .await
        .expect("dbsize");
    assert_eq!(n, 0, "nothing was created for a forged id");
}

#[tokio::test]
async fn rotation_retires_the_old_id_at_once() {
    let env = Env::start().await;
    let s = Sessions::new(env.client.clone()).expect("sessions");
    let (old, _) = s
        .create(Some("ada"), [kv("role", json!("user"))])
        .await
        .expect("create");
    let new = s
        .rotate(old.expose())
        .await
        .expect("rotate")
        .expect("rotated");
    assert_ne!(old, new);
    assert!(
        s.get(old.expose()).await.expect("get").is_none(),
        "the old id stops working at once"
    );
    let moved = s.get(new.expose()).await.expect("get").expect("live");
    assert_eq!(moved.get::<String>("role").as_deref(), Some("user"));
    let listed = s.list_user("ada").await.expect("list");
    assert_eq!(
        listed.iter().map(|i| i.hash.clone()).collect::<Vec<_>>(),
        vec![new.hash()]
    );
}

/// The session hash of `id` and its remaining TTL in ms.
async fn session_pttl(
    env: &Env,
    raw: &mut redis::aio::MultiplexedConnection,
    id: &SessionId,
) -> (String, i64) {
    let key = env
        .client
        .namespace_keys()
        .expect("namespace")
        .session(id.tag(), &id.hash());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(raw)
        .await
        .expect("pttl");
    (key, ttl)
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let env = Env::start().await;
    let mut raw = env.raw().await;
    // Timeouts far longer than the test; where time must pass, the test moves it in Redis
    // (a shorter TTL, an earlier absolute deadline) instead of sleeping through it.
    let idle = Sessions::with_config(
        env.client.clone(),
        SessionConfig {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(3600),
        },
    )
    .expect("sessions");
    let (a, _) = idle.create(None, []).await.expect("create");
    let (key, ttl) = session_pttl(&env, &mut raw, &a).await;
    assert!(ttl > 0 && ttl <= 60_000, "idle timeout as TTL: {ttl}");
    // Activity keeps it alive past its idle timeout (sliding): a session about to go idle is
    // given its whole idle timeout again by a read...
    for _ in 0..4 {
        let _: () = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(5_000)
            .query_async(&mut raw)
            .await
            .expect("pexpire");
        assert!(idle.get(a.expose()).await.expect("get").is_some());
        let (_, ttl) = session_pttl(&env, &mut raw, &a).await;
        assert!(ttl > 5_000 && ttl <= 60_000, "a read slides the TTL: {ttl}");
    }
    // ...and inactivity ends it: its TTL runs out (shortened to 1 ms here; nothing reads it
    // meanwhile, since a read would slide it).
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(1)
        .query_async(&mut raw)
        .await
        .expect("pexpire");
    common::eventually(
        Duration::from_secs(10),
        "the idle session's key to expire",
        || {
            let mut raw = raw.clone();
            let key = key.clone();
            async move {
                redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async::<bool>(&mut raw)
                    .await
                    .is_ok_and(|e| !e)
            }
        },
    )
    .await;
    assert!(
        idle.get(a.expose()).await.expect("get").is_none(),
        "inactivity ended it"
    );

    let absolute = Sessions::with_config(
        env.client.clone(),
        SessionConfig {
            idle: Duration::from_secs(3600),
            absolute: Duration::from_secs(60),
        },
    )
    .expect("sessions");
    let (b, _) = absolute.create(None, []).await.expect("create");
    let (key, ttl) = session_pttl(&env, &mut raw, &b).await;
    assert!(
        ttl > 0 && ttl <= 60_000,
        "capped by the absolute timeout: {ttl}"
    );
    // Alive while in use, and activity never extends it past the absolute timeout.
    for _ in 0..4 {
        assert!(absolute.get(b.expose()).await.expect("get").is_some());
        let (_, ttl) = session_pttl(&env, &mut raw, &b).await;
        assert!(
            ttl > 0 && ttl <= 60_000,
            "activity does not extend past the absolute timeout: {ttl}"
        );
    }
    // The absolute deadline passes (seeded: moved to now in the session hash) while the key
    // still has most of its TTL: a read ends the session.
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("a")
        .arg(common::now_ms())
        .query_async(&mut raw)
        .await
        .expect("hset");
    assert!(
        absolute.get(b.expose()).await.expect("get").is_none(),
        "gone at its absolute timeout, whatever the activity"
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .expect("exists");
    assert!(!exists, "and deleted");
}

#[tokio::test]
async fn concurrent_writes_are_never_lost() {
    let env = Env::start().await;
    let s = Sessions::new(env.client.clone()).expect("sessions");
    let (id, _) = s.create(None, []).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = s.clone();
        let id = id.expose().to_string();
        tasks.push(tokio::spawn(async move {
            s.merge(&id, [kv(&format!("f{i}"), json!(i))], &[])
                .await
                .expect("merge")
        }));
    }
    for t in tasks {
        assert!(t.await.expect("task").is_some());
    }
    let after = s.get(id.expose()).await.expect("get").expect("live");
    assert_eq!(after.data.len(), 50, "every concurrent merge kept");
    assert_eq!(after.version, 51);

    // Read-modify-write: of two writers that read the same version, one wins, one is told.
    let v = after.version;
    let first = s
        .update(id.expose(), v, [kv("owner", json!("a"))])
        .await
        .expect("update");
    let second = s
        .update(id.expose(), v, [kv("owner", json!("b"))])
        .await
        .expect("update");
    assert_eq!(first, Update::Written(v + 1));
    assert_eq!(second, Update::Conflict(v + 1));
    let now = s.get(id.expose()).await.expect("get").expect("live");
    assert_eq!(now.get::<String>("owner").as_deref(), Some("a"));
    assert_eq!(now.data.len(), 1, "update replaces the data");
}

#[tokio::test]
async fn log_out_everywhere_and_index_cleanup() {
    let env = Env::start().await;
    let s = Sessions::new(env.client.clone()).expect("sessions");
    let short = Sessions::with_config(
        env.client.clone(),
        SessionConfig {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(60),
        },
    )
    .expect("sessions");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.create(Some("bob"), []).await.expect("create").0);
    }
    let other = s.create(Some("eve"), []).await.expect("create").0;
    let (expiring, _) = short.create(Some("bob"), []).await.expect("create");
    assert_eq!(s.list_user("bob").await.expect("list").len(), 4);
    // The short-lived one goes idle: its TTL runs out (shortened to 1 ms in Redis).
    let mut raw = env.raw().await;
    let (key, _) = session_pttl(&env, &mut raw, &expiring).await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(1)
        .query_async(&mut raw)
        .await
        .expect("pexpire");
    common::eventually(
        Duration::from_secs(10),
        "the expired one to leave the listing",
        || async { s.list_user("bob").await.expect("list").len() == 3 },
    )
    .await;
    assert_eq!(
        s.cleanup().await.expect("cleanup"),
        1,
        "its index entry is dropped"
    );
    assert_eq!(s.destroy_user("bob").await.expect("logout"), 3);
    for id in &ids {
        assert!(s.get(id.expose()).await.expect("get").is_none());
    }
    assert!(
        s.get(other.expose()).await.expect("get").is_some(),
        "other users are untouched"
    );
    assert!(s.list_user("bob").await.expect("list").is_empty());
    assert!(
        short.get(expiring.expose()).await.expect("get").is_none(),
        "the idle one expired by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_live_sessions() {
    let env = Env::start().await;
    let s = Sessions::new(env.client.clone()).expect("sessions");
    let mut tasks = Vec::new();
    for chunk in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..500 {
                let user = format!("user:{}", chunk * 500 + i);
                ids.push(
                    s.create(Some(&user), [kv("n", json!(i))])
                        .await
                        .expect("create")
                        .0,
                );
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("task"));
    }
    assert_eq!(ids.len(), 10_000);
    for id in ids.iter().step_by(97) {
        assert!(s.get(id.expose()).await.expect("get").is_some());
    }
    let mut raw = env.raw().await;
    let n: u64 = redis::cmd("DBSIZE")
        .query_async(&mut raw)
        .await
        .expect("dbsize");
    assert_eq!(n, 20_000, "10,000 sessions and their 10,000 user indexes");
}
