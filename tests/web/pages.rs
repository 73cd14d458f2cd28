//! The dashboard's pages and actions, requested straight from its Router: what they show,
//! what they refuse, and that nothing a producer wrote reaches the HTML unescaped.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use queue::admin::{Admin, State};
use queue::web::{Dashboard, Role};
use queue::{Client, NewJob};
use tower::ServiceExt;

use crate::common::{self, Env};

const ADMIN_TOKEN: &str = "admin-token-0123456789";
const READ_TOKEN: &str = "read-token-0123456789";

/// A response: status, `Location`, body.
struct Reply {
    status: StatusCode,
    location: String,
    timing: String,
    body: String,
}

/// A router and the credentials its requests carry.
struct Dash {
    router: axum::Router,
    auth: Option<String>,
}

impl Dash {
    fn open(client: &Client) -> Dash {
        Dash {
            router: Dashboard::new(Admin::new(client.clone())).router(),
            auth: None,
        }
    }

    fn with_users(client: &Client) -> axum::Router {
        Dashboard::new(Admin::new(client.clone()))
            .token(Role::Admin, ADMIN_TOKEN)
            .expect("token")
            .token(Role::ReadOnly, READ_TOKEN)
            .expect("token")
            .basic(Role::ReadOnly, "viewer", "viewer-password")
            .expect("user")
            .router()
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = common::bounded(
            Duration::from_secs(20),
            "a dashboard request",
            self.router.clone().oneshot(req),
        )
        .await
        .expect("infallible");
        let status = res.status();
        let header = |h: &str| {
            res.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (location, timing) = (header("location"), header("server-timing"));
        let bytes = axum::body::to_bytes(res.into_body(), 10 << 20)
            .await
            .expect("body");
        Reply {
            status,
            location,
            timing,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn request(&self, method: &str, path: &str) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "text/html");
        if let Some(a) = &self.auth {
            b = b.header(header::AUTHORIZATION, a.as_str());
        }
        b
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            self.request("GET", path)
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        self.send(
            self.request("POST", path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body.join("&")))
                .expect("request"),
        )
        .await
    }

    /// The CSRF token the page at `path` put in its forms.
    async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        let marker = r#"name="csrf" value=""#;
        let at = page
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no form on {path}:\n{}", page.body));
        page.body[at + marker.len()..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A pending job with JSON arguments (MessagePack of the JSON value, as any producer writes).
async fn pending(client: &Client, queue: &str, name: &str, args: serde_json::Value) -> String {
    let bytes = queue::wire::encode_value(&args, "arguments").expect("encode");
    client
        .enqueue_job(NewJob::raw(name, bytes).queue(queue))
        .await
        .expect("enqueue")
        .id
        .to_string()
}

#[tokio::test]
async fn every_page_answers_and_hostile_names_stay_text() {
    let env = Env::start().await;
    let dead = crate::dead_jobs(&env, 2).await;
    // (The Rust producer refuses control characters in a name; a foreign one may not.)
    let hostile = "<img src=x onerror=alert(1)>";
    let odd_queue = "we/ird?q=<b>";
    let odd = pending(
        &env.client,
        odd_queue,
        hostile,
        serde_json::json!({"x": "</pre><script>\u{1b}[31m"}),
    )
    .await;
    let dash = Dash::open(&env.client);
    let pages = [
        "/".to_string(),
        "/?range=24h".into(),
        "/?range=72h".into(),
        "/queues/web?state=dead".into(),
        format!("/queues/web/jobs/{}", dead[0]),
        format!("/queues/{}", enc(odd_queue)),
        format!("/queues/{}/jobs/{odd}", enc(odd_queue)),
        "/queues/web/confirm?action=retry&state=dead".into(),
        "/workers".into(),
        "/cron".into(),
        "/assets/app.css".into(),
        "/assets/app.js".into(),
    ];
    for p in &pages {
        let r = dash.get(p).await;
        assert_eq!(r.status, StatusCode::OK, "{p}: {}", r.body);
        assert!(
            r.timing.starts_with("app;dur="),
            "{p}: Server-Timing {:?}",
            r.timing
        );
        for raw in ["<img", "<script>", "<b>", "</pre><script>", "\u{1b}"] {
            assert!(
                !r.body.contains(raw),
                "{p} shows {raw:?} unescaped:\n{}",
                r.body
            );
        }
    }
    let job = dash
        .get(&format!("/queues/web/jobs/{}", dead[0]))
        .await
        .body;
    assert!(job.contains("the mail server said no &lt;b&gt;"), "{job}");
    assert!(job.contains("Retry now"), "an admin sees the actions");
    let odd_page = dash.get(&format!("/queues/{}", enc(odd_queue))).await.body;
    assert!(
        odd_page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{odd_page}"
    );
    // Links to the odd queue are percent-encoded.
    let overview = dash.get("/").await.body;
    assert!(
        overview.contains("/queues/we%2Fird%3Fq%3D%3Cb%3E"),
        "{overview}"
    );
    assert!(
        overview.contains(r#"data-live="web|dead">2<"#),
        "{overview}"
    );

    let missing = dash
        .get("/queues/web/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(dash.get("/queues/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        dash.get("/queues/web?state=bogus").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        dash.get("/queues/web?from=-1").await.status,
        StatusCode::BAD_REQUEST
    );
    // Past Redis's signed 64-bit positions: refused, not a panic or a Redis error.
    for huge in ["18446744073709551615", "9223372036854775808"] {
        let r = dash.get(&format!("/queues/web?from={huge}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "from={huge}");
    }
    let r = dash.get("/queues/web?from=9223372036854775807").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the last position lists nothing: {}",
        r.body
    );
}

#[tokio::test]
async fn mounted_under_a_path_its_links_follow() {
    let env = Env::start().await;
    crate::dead_jobs(&env, 1).await;
    let app = axum::Router::new().nest(
        "/admin/queues",
        Dashboard::new(Admin::new(env.client.clone())).router(),
    );
    let dash = Dash {
        router: app,
        auth: None,
    };
    let r = dash.get("/admin/queues").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains(r#"href="/admin/queues/queues/web""#),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"href="/admin/queues/assets/app.css""#));
    // The root is the mount path itself (a nested router does not answer `/admin/queues/`).
    assert!(
        r.body.contains(r#"class="brand" href="/admin/queues""#),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(r#"href="/admin/queues?range=24h""#),
        "{}",
        r.body
    );
    assert_eq!(
        dash.get("/admin/queues?range=24h").await.status,
        StatusCode::OK
    );
    let csrf = dash.csrf("/admin/queues/queues/web").await;
    let r = dash
        .post("/admin/queues/queues/web/pause", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location, "/admin/queues/queues/web?done=paused");
    assert!(env.client.is_paused("web").await.expect("paused"));
}

/// Open on loopback (`queue web` without users), the dashboard answers only requests to
/// localhost: a page on a rebound name cannot read it.
#[tokio::test]
async fn an_open_local_dashboard_refuses_other_host_names() {
    let env = Env::start().await;
    let router = Dashboard::new(Admin::new(env.client.clone()))
        .local_only(true)
        .router();
    let dash = Dash { router, auth: None };
    for (host, want) in [
        ("localhost:8080", StatusCode::OK),
        ("127.0.0.1:8080", StatusCode::OK),
        ("[::1]:8080", StatusCode::OK),
        ("attacker.example:8080", StatusCode::MISDIRECTED_REQUEST),
        (
            "127.0.0.1.attacker.example",
            StatusCode::MISDIRECTED_REQUEST,
        ),
    ] {
        let r = dash
            .send(
                dash.request("GET", "/")
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        assert_eq!(r.status, want, "{host}");
    }
}

#[tokio::test]
async fn sign_in_roles_and_csrf() {
    let env = Env::start().await;
    crate::dead_jobs(&env, 1).await;
    let router = Dash::with_users(&env.client);
    let nobody = Dash {
        router: router.clone(),
        auth: None,
    };
    // A browser is sent to the login form; anything else gets a 401 with a basic challenge.
    let r = nobody.get("/queues/web").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location, "/login?next=%2Fqueues%2Fweb");
    let r = nobody
        .send(Request::get("/").body(Body::empty()).expect("request"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(nobody.get("/login").await.status, StatusCode::OK);
    assert_eq!(nobody.get("/assets/app.css").await.status, StatusCode::OK);
    let wrong = Dash {
        router: router.clone(),
        auth: Some("Bearer not-the-token-at-all".into()),
    };
    assert_eq!(wrong.get("/").await.status, StatusCode::SEE_OTHER);

    // The login form sets a cookie that signs in; the next path stays on this site.
    let r = nobody
        .post(
            "/login",
            &[
                ("user", ""),
                ("secret", READ_TOKEN),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location, "/");
    let r = nobody
        .post(
            "/login",
            &[("user", "viewer"), ("secret", "wrong"), ("next", "/")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("wrong credentials"));
    // A next path a browser would read as another site is not followed.
    let r = nobody
        .post(
            "/login",
            &[
                ("user", ""),
                ("secret", READ_TOKEN),
                ("next", "/\t/evil.example"),
            ],
        )
        .await;
    assert_eq!(r.location, "/");
    let cross = nobody
        .send(
            nobody
                .request("POST", "/login")
                .header("sec-fetch-site", "cross-site")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("user=&secret={READ_TOKEN}")))
                .expect("request"),
        )
        .await;
    assert_eq!(
        cross.status,
        StatusCode::FORBIDDEN,
        "no login from another site"
    );

    // Read-only: sees everything, no action button, and a post is refused.
    let reader = Dash {
        router: router.clone(),
        auth: Some(format!("Bearer {READ_TOKEN}")),
    };
    let page = reader.get("/queues/web?state=dead").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("read-only"), "{}", page.body);
    assert!(!page.body.contains("Retry all"), "{}", page.body);
    assert!(
        !page.body.contains(r#"name="csrf""#),
        "no form for a reader"
    );
    let r = reader.post("/queues/web/pause", &[("csrf", "x")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!env.client.is_paused("web").await.expect("paused"));
    let basic = Dash {
        router: router.clone(),
        auth: Some("Basic dmlld2VyOnZpZXdlci1wYXNzd29yZA==".into()), // viewer:viewer-password
    };
    assert_eq!(basic.get("/workers").await.status, StatusCode::OK);
    assert_eq!(
        basic.post("/queues/web/pause", &[]).await.status,
        StatusCode::FORBIDDEN
    );

    // Admin: an action needs the CSRF token of its own session; a cross-site post is refused.
    let admin = Dash {
        router: router.clone(),
        auth: Some(format!("Bearer {ADMIN_TOKEN}")),
    };
    let r = admin.post("/queues/web/pause", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no token");
    let r = admin.post("/queues/web/pause", &[("csrf", "forged")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a wrong token");
    let csrf = admin.csrf("/queues/web").await;
    let cross = admin
        .send(
            admin
                .request("POST", "/queues/web/pause")
                .header("sec-fetch-site", "cross-site")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("csrf={csrf}")))
                .expect("request"),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(!env.client.is_paused("web").await.expect("paused"));
    let r = admin.post("/queues/web/pause", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(env.client.is_paused("web").await.expect("paused"));
    let page = admin.get(&r.location).await.body;
    assert!(page.contains("Paused: workers take no new job"), "{page}");
    let r = admin.post("/queues/web/resume", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(!env.client.is_paused("web").await.expect("paused"));
}

#[tokio::test]
async fn search_by_name_text_and_json_path_is_bounded() {
    let env = Env::start().await;
    for (i, mail) in ["alice@example.com", "bob@example.com", "ALICE@other.org"]
        .iter()
        .enumerate()
    {
        pending(
            &env.client,
            "search",
            "mail.send",
            serde_json::json!({"user": {"id": i, "mail": mail}}),
        )
        .await;
    }
    pending(
        &env.client,
        "search",
        "sms.send",
        serde_json::json!({"user": {"id": 1}}),
    )
    .await;
    let dash = Dash::open(&env.client);
    let count = |body: &str| body.matches(r#"class="mono" href="#).count();
    let r = dash.get("/queues/search?q=alice").await;
    assert_eq!(count(&r.body), 2, "case-insensitive substring: {}", r.body);
    let r = dash
        .get(&format!("/queues/search?q={}", enc("$.user.id = 1")))
        .await;
    assert_eq!(count(&r.body), 2, "a JSON path, any name: {}", r.body);
    let r = dash
        .get(&format!(
            "/queues/search?name=mail.send&q={}",
            enc("$.user.id = 1")
        ))
        .await;
    assert_eq!(count(&r.body), 1, "and a name");
    assert!(
        r.body.contains("1 match(es) in entries 1–4 of 4"),
        "{}",
        r.body
    );
    let r = dash
        .get(&format!("/queues/search?q={}", enc("$.user[x] = 1")))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // More matches than a page in a set shorter than a read: the page links to the rest.
    for i in 0..60 {
        pending(&env.client, "many", "x", serde_json::json!({"i": i})).await;
    }
    let r = dash.get("/queues/many?name=x").await;
    assert_eq!(count(&r.body), 50);
    assert!(r.body.contains("continue the search"), "{}", r.body);

    // Past the budget: the first page says how far it read and continues from there.
    let filler =
        queue::wire::encode_value(&serde_json::json!({"n": 0}), "arguments").expect("encode");
    let mut batch = Vec::new();
    for _ in 0..queue::admin::SEARCH_BUDGET {
        batch.push(NewJob::raw("filler", filler.clone()).queue("search"));
        if batch.len() == queue::wire::MAX_BATCH {
            env.client
                .enqueue_batch(std::mem::take(&mut batch))
                .await
                .expect("batch");
        }
    }
    env.client.enqueue_batch(batch).await.expect("batch");
    let needle = pending(
        &env.client,
        "search",
        "needle",
        serde_json::json!({"find": "me"}),
    )
    .await;
    let r = dash.get("/queues/search?q=find").await;
    assert_eq!(count(&r.body), 0, "the needle lies past the budget");
    assert!(
        r.body.contains("0 match(es) in entries 1–5,000 of 5,005"),
        "{}",
        r.body
    );
    let next = r
        .body
        .split("continue the search")
        .next()
        .and_then(|s| s.rsplit("href=\"").next())
        .and_then(|s| s.split('"').next())
        .expect("a continue link")
        .replace("&amp;", "&");
    let r = dash.get(&next).await;
    assert!(r.body.contains(&needle), "{next}: {}", r.body);
}

#[tokio::test]
async fn bulk_and_single_actions_change_jobs() {
    let env = Env::start().await;
    let dead = crate::dead_jobs(&env, 3).await;
    let dash = Dash::open(&env.client);
    let admin = Admin::new(env.client.clone());
    let csrf = dash
        .csrf("/queues/web/confirm?action=retry&state=dead")
        .await;
    // One job: retry.
    let r = dash
        .post(
            &format!("/queues/web/jobs/{}/retry", dead[0]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let v = admin
        .find(dead[0].as_str(), Some("web"))
        .await
        .expect("find")
        .expect("there");
    assert_eq!(v.state, State::Pending);
    // Retrying it again: it moved meanwhile.
    let r = dash
        .post(
            &format!("/queues/web/jobs/{}/retry", dead[0]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    // The rest, in bulk, with the count.
    let confirm = dash
        .get("/queues/web/confirm?action=retry&state=dead")
        .await
        .body;
    assert!(
        confirm.contains("Retry all 2 dead jobs of web?"),
        "{confirm}"
    );
    let r = dash
        .post(
            "/queues/web/bulk",
            &[
                ("csrf", &csrf),
                ("action", "retry"),
                ("state", "dead"),
                ("name", ""),
                ("q", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location, "/queues/web?state=dead&done=retried&n=2");
    assert!(dash
        .get(&r.location)
        .await
        .body
        .contains("Retried 2 job(s)."));
    let stats = admin.stats("web").await.expect("stats");
    assert_eq!((stats.dead, stats.pending), (0, 3), "{stats:?}");
    // Retried while a worker fails them again at once: each is retried once, not again when it
    // comes back dead during the same request.
    let running = common::start_worker(&env.client, &["web.dies"], |b| b.queue("web", 1)).await;
    common::eventually(Duration::from_secs(30), "the three dead again", || async {
        admin.stats("web").await.expect("stats").dead == 3
    })
    .await;
    let r = dash
        .post(
            "/queues/web/bulk",
            &[("csrf", &csrf), ("action", "retry"), ("state", "dead")],
        )
        .await;
    assert_eq!(
        r.location, "/queues/web?state=dead&done=retried&n=3",
        "{}",
        r.body
    );
    common::eventually(
        Duration::from_secs(30),
        "the three dead once more",
        || async { admin.stats("web").await.expect("stats").dead == 3 },
    )
    .await;
    running.stop().await;
    let r = dash
        .post(
            "/queues/web/bulk",
            &[("csrf", &csrf), ("action", "retry"), ("state", "dead")],
        )
        .await;
    assert_eq!(r.location, "/queues/web?state=dead&done=retried&n=3");

    // Delete one pending job, then all of them.
    let r = dash
        .post(
            &format!("/queues/web/jobs/{}/delete", dead[1]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = dash
        .post(
            "/queues/web/bulk",
            &[("csrf", &csrf), ("action", "delete"), ("state", "pending")],
        )
        .await;
    assert_eq!(r.location, "/queues/web?state=pending&done=deleted&n=2");
    assert_eq!(admin.stats("web").await.expect("stats").pending, 0);
    // No retry of pending jobs, no change of running ones.
    let r = dash
        .post(
            "/queues/web/bulk",
            &[("csrf", &csrf), ("action", "retry"), ("state", "pending")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = dash
        .get("/queues/web/confirm?action=delete&state=active")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_live_stream_sends_counts() {
    let env = Env::start().await;
    crate::dead_jobs(&env, 1).await;
    let dash = Dash::open(&env.client);
    let res = dash
        .router
        .clone()
        .oneshot(Request::get("/live").body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    use futures_util::StreamExt;
    let mut body = res.into_body().into_data_stream();
    let first = common::bounded(Duration::from_secs(10), "the first event", body.next())
        .await
        .expect("an event")
        .expect("bytes");
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("event: counts"), "{text}");
    assert!(text.contains(r#""web|dead":1"#), "{text}");
}

/// On a Redis Cluster, with a queue split in three shards over the masters: the overview and
/// the queue's page show one queue with every shard's jobs, and a job in a shard opens from
/// its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_split_queue_is_one_queue_on_every_page() {
    let cluster = tokio::task::block_in_place(|| {
        queue::testing::RedisCluster::start(queue::testing::ClusterOptions {
            replicas: 0,
            ..Default::default()
        })
    })
    .expect("a 3-master cluster (redis-server and redis-cli must be installed)");
    let client = Client::connect(&cluster.url()).await.expect("connect");
    client.split_queue("web", 3).await.expect("split");
    let jobs: Vec<NewJob> = (0..9u32)
        .map(|i| NewJob::of::<crate::ok>(&i).expect("encode"))
        .collect();
    let sent = client.enqueue_batch(jobs).await.expect("enqueue");
    let dash = Dash::open(&client);
    let overview = dash.get("/").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    assert!(overview.body.contains("web"), "{}", overview.body);
    assert!(
        !overview.body.contains("web{"),
        "no shard is listed as a queue"
    );
    let page = dash.get("/queues/web").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for e in &sent {
        assert!(page.body.contains(e.id.as_str()), "{} is listed", e.id);
    }
    let one = dash
        .get(&format!("/queues/web/jobs/{}", sent[4].id.as_str()))
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
}
