//! The dashboard in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver, fantoccini). Signs in, loads every page, searches, retries a dead job and sees
//! it move, watches a live count change without a reload, pauses a queue, then signs in as a
//! read-only user and sees the actions gone and refused.
//!
//! `.ci/run` installs `chromium` and `chromium-driver` when missing. With
//! `QUEUE_SCREENSHOTS=<dir>` the test also saves the main pages there (docs/ has them).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use queue::admin::{Admin, State};
use queue::web::{Dashboard, Role};
use queue::NewJob;

use crate::common::{self, Env};

const ADMIN_TOKEN: &str = "browser-admin-token-0123";
const READ_TOKEN: &str = "browser-read-token-01234";
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Its own process group, so that dropping it also ends the browsers it started (a
        // failing test leaves no Chromium behind).
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("chromedriver").arg(format!("--port={port}")),
            0,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromedriver ({e}): apt-get install -y chromium chromium-driver (.ci/run does)")
        });
        let driver = Driver { child, port };
        common::eventually(WAIT, "chromedriver to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        driver
    }

    async fn browser(&self) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        common::bounded(
            WAIT,
            "a Chromium session",
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{}", self.port)),
        )
        .await
        .expect("chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dashboard served on a free loopback port until the test ends.
async fn serve(env: &Env) -> SocketAddr {
    let dash = Dashboard::new(Admin::new(env.client.clone()))
        .token(Role::Admin, ADMIN_TOKEN)
        .expect("token")
        .token(Role::ReadOnly, READ_TOKEN)
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(dash.serve(listener, std::future::pending()));
    addr
}

async fn text(b: &Browser, css: &str) -> String {
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Clicks what `locator` finds and waits for the page it leads to (the old document's root
/// element goes stale), so nothing reads the page being left.
async fn follow(b: &Browser, locator: Locator<'_>) {
    let old = b.find(Locator::Css("html")).await.expect("the page");
    b.find(locator)
        .await
        .expect("the element to click")
        .click()
        .await
        .expect("click");
    common::eventually(WAIT, "the next page", || {
        let old = old.clone();
        async move { old.tag_name().await.is_err() }
    })
    .await;
}

async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/")).await.expect("goto");
    // Not signed in: the login form.
    let secret = b
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("input[name=secret]"))
        .await
        .expect("the login form");
    secret.send_keys(token).await.expect("type");
    follow(b, Locator::Css("form.login button")).await;
    assert_eq!(text(b, "h1").await, "Queues");
}

/// For the pictures only: an hour of history in the `emails` queue, written as workers write
/// it (a varying rate, a few failures), so the charts have something to show.
async fn seed_history(env: &Env) {
    if std::env::var_os("QUEUE_SCREENSHOTS").is_none() {
        return;
    }
    let mut raw = env.raw().await;
    let now = common::now_ms() / 60_000;
    for m in 0..60i64 {
        let done = 400 + (m * 37 % 23) * 20 + if m > 40 { 300 } else { 0 };
        let failed = (m * 13) % 7 + if (44..47).contains(&m) { 40 } else { 0 };
        let key = format!("queue:{{emails}}:metrics:{}", now - 59 + m);
        let fields: Vec<(String, i64)> = vec![
            ("c|mail.send".into(), done),
            ("f|mail.send".into(), failed),
            ("r|mail.send".into(), failed),
            ("w3|mail.send".into(), done / 2),
            ("w4|mail.send".into(), done / 3),
            ("w6|mail.send".into(), done / 6),
            ("t5|mail.send".into(), done),
        ];
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(fields)
            .query_async(&mut raw)
            .await
            .expect("seed history");
    }
}

async fn shot(b: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("QUEUE_SCREENSHOTS") else {
        return;
    };
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(std::path::Path::new(&dir).join(name), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_dashboard_in_chromium() {
    let env = Env::start().await;
    let dead = crate::dead_jobs(&env, 3).await;
    for (i, mail) in ["alice@example.com", "bob@example.com"].iter().enumerate() {
        let args = serde_json::json!({"user": {"id": i, "mail": mail}});
        let bytes = queue::wire::encode_value(&args, "arguments").expect("encode");
        env.client
            .enqueue_job(NewJob::raw("mail.send", bytes).queue("emails"))
            .await
            .expect("enqueue");
    }
    seed_history(&env).await;
    let addr = serve(&env).await;
    let base = format!("http://{addr}");
    let driver = Driver::start().await;
    let b = driver.browser().await;
    let admin = Admin::new(env.client.clone());

    sign_in(&b, &base, ADMIN_TOKEN).await;
    assert!(text(&b, "table").await.contains("emails"));
    shot(&b, "dashboard-overview.png").await;

    // Every page loads.
    for (path, h1) in [
        ("/queues/web?state=dead".to_string(), "web"),
        (format!("/queues/web/jobs/{}", dead[0]), dead[0].as_str()),
        ("/workers".into(), "Workers"),
        ("/cron".into(), "Cron schedules"),
        ("/?range=72h".into(), "Queues"),
    ] {
        b.goto(&format!("{base}{path}")).await.expect("goto");
        assert_eq!(text(&b, "h1").await, h1, "{path}");
    }

    // Search by argument content.
    b.goto(&format!("{base}/queues/emails"))
        .await
        .expect("goto");
    shot(&b, "dashboard-queue.png").await;
    let q = b
        .find(Locator::Css("form.search input[name=q]"))
        .await
        .expect("search box");
    q.send_keys("alice").await.expect("type");
    follow(&b, Locator::Css("form.search button")).await;
    let rows = text(&b, "table.jobs tbody").await;
    assert!(rows.contains("mail.send"), "{rows}");
    let found = b
        .find_all(Locator::Css("table.jobs tbody a.mono"))
        .await
        .expect("rows");
    assert_eq!(found.len(), 1, "{rows}");

    // A live count follows a change made elsewhere, without a reload.
    b.goto(&format!("{base}/")).await.expect("goto");
    let cell = "td[data-live='web|dead']";
    assert_eq!(text(&b, cell).await, "3");
    let v = admin
        .find(dead[2].as_str(), Some("web"))
        .await
        .expect("find")
        .expect("there");
    admin.retry(&[v]).await.expect("retry");
    common::eventually(WAIT, "the live count to show 2 dead", || {
        let b = b.clone();
        async move { text(&b, cell).await == "2" }
    })
    .await;

    // Retry a dead job from its page and see it move.
    b.goto(&format!("{base}/queues/web/jobs/{}", dead[0]))
        .await
        .expect("goto");
    shot(&b, "dashboard-job.png").await;
    assert_eq!(text(&b, "dl.fields .badge").await, "dead");
    follow(&b, Locator::XPath("//button[text()='Retry now']")).await;
    assert_eq!(text(&b, "dl.fields .badge").await, "pending");
    assert!(text(&b, "p.flash").await.contains("runs again now"));
    let v = admin
        .find(dead[0].as_str(), Some("web"))
        .await
        .expect("find")
        .expect("there");
    assert_eq!(v.state, State::Pending);

    // Pause the queue.
    b.goto(&format!("{base}/queues/web")).await.expect("goto");
    follow(&b, Locator::XPath("//button[text()='Pause']")).await;
    assert!(text(&b, "h1").await.contains("paused"));
    assert!(env.client.is_paused("web").await.expect("paused"));

    // On a phone.
    b.set_window_size(390, 844).await.expect("resize");
    b.goto(&format!("{base}/")).await.expect("goto");
    let width: i64 = b
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .expect("width")
        .as_i64()
        .unwrap_or(0);
    assert!(
        width <= 400,
        "the page fits a phone's width (tables scroll inside): {width}"
    );
    shot(&b, "dashboard-phone.png").await;
    b.set_window_size(1280, 900).await.expect("resize");

    // Sign out; sign in read-only: no action button, and a post is refused.
    follow(&b, Locator::XPath("//button[text()='Sign out']")).await;
    sign_in(&b, &base, READ_TOKEN).await;
    b.goto(&format!("{base}/queues/web/jobs/{}", dead[1]))
        .await
        .expect("goto");
    assert_eq!(text(&b, "dl.fields .badge").await, "dead");
    assert!(b
        .find_all(Locator::Css("main form[method=post]"))
        .await
        .expect("forms")
        .is_empty());
    let status = b
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch("/queues/web/jobs/" + arguments[0] + "/retry",
                     {method: "POST", body: new URLSearchParams({csrf: "x"})})
                 .then(r => done(r.status), e => done(String(e)));"#,
            vec![serde_json::json!(dead[1].as_str())],
        )
        .await
        .expect("fetch");
    assert_eq!(status, serde_json::json!(403));
    let v = admin
        .find(dead[1].as_str(), Some("web"))
        .await
        .expect("find")
        .expect("there");
    assert_eq!(v.state, State::Dead, "the read-only user changed nothing");
    b.close().await.expect("close");
}
