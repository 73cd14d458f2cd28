//! Sessions against a real Redis: ids never stored, rotation, fixation, idle and absolute
//! expiry, concurrent writes, per-user listing and logout, index cleanup, 10,000 sessions.

mod common;

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

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let env = Env::start().await;
    let idle = Sessions::with_config(
        env.client.clone(),
        SessionConfig {
            idle: Duration::from_millis(300),
            absolute: Duration::from_secs(60),
        },
    )
    .expect("sessions");
    let (a, _) = idle.create(None, []).await.expect("create");
    // Activity keeps it alive past its idle timeout (sliding)...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(idle.get(a.expose()).await.expect("get").is_some());
    }
    // ...and inactivity ends it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(idle.get(a.expose()).await.expect("get").is_none());

    let absolute = Sessions::with_config(
        env.client.clone(),
        SessionConfig {
            idle: Duration::from_secs(60),
            absolute: Duration::from_millis(400),
        },
    )
    .expect("sessions");
    let created = std::time::Instant::now();
    let (b, _) = absolute.create(None, []).await.expect("create");
    let mut last_alive = std::time::Duration::ZERO;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if absolute.get(b.expose()).await.expect("get").is_some() {
            last_alive = created.elapsed();
        }
    }
    assert!(
        absolute.get(b.expose()).await.expect("get").is_none(),
        "activity does not extend past the absolute timeout"
    );
    assert!(
        last_alive >= Duration::from_millis(250) && last_alive < Duration::from_millis(500),
        "alive while in use, gone at its 400 ms absolute timeout (last seen alive after {last_alive:?})"
    );
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
            idle: Duration::from_millis(100),
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.list_user("bob").await.expect("list").len(),
        3,
        "the expired one is not listed"
    );
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
