//! The web dashboard: every page and action through its Router (`pages`), and the same in a
//! real headless Chromium driven over WebDriver (`browser`).

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod pages;

use queue::{job, JobError};

#[job(name = "web.ok", queue = "web")]
async fn ok(_n: u32) -> Result<(), JobError> {
    Ok(())
}

/// Dead-letters at once: the dashboard's dead jobs.
#[job(name = "web.dies", queue = "web")]
async fn dies(_n: u32) -> Result<(), JobError> {
    Err(JobError::dead_letter("the mail server said no <b>"))
}

/// Jobs of `web.dies` run to their dead letter by a worker, `n` of them, with arguments
/// `{"user": {"id": i}, "mail": "user<i>@example.com"}` as JSON... encoded from `i`.
pub(crate) async fn dead_jobs(env: &common::Env, n: u32) -> Vec<queue::JobId> {
    let running = common::start_worker(&env.client, &["web.dies"], |b| b.queue("web", 1)).await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(env.client.enqueue::<dies>(&i).await.expect("enqueue").id);
    }
    for id in &ids {
        let out = env
            .client
            .wait_for("web", id, std::time::Duration::from_secs(30))
            .await
            .expect("wait");
        assert_eq!(out.state, queue::JobState::Dead);
    }
    running.stop().await;
    ids
}
