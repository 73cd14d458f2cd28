//! A worker process: `REDIS_URL=redis://127.0.0.1:6379 cargo run --example worker`.
//!
//! Runs every `#[job]` linked into it (here `email.send`) on the queues in `QUEUE_QUEUES`
//! (default `emails`), until SIGINT or SIGTERM. Pair it with the CLI:
//! `queue enqueue email.send -q emails --args '{"to":"ada@example.com"}'`.

use queue::{job, JobError, WorkerBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Email {
    to: String,
    #[serde(default)]
    subject: String,
}

/// Refuses addresses without an `@` for good (dead-letter: retrying cannot fix them).
#[job(
    name = "email.send",
    queue = "emails",
    max_attempts = 3,
    timeout = "10s"
)]
async fn send_email(email: Email) -> Result<String, JobError> {
    if !email.to.contains('@') {
        return Err(JobError::dead_letter(format!(
            "invalid address {:?}",
            email.to
        )));
    }
    tracing::info!(to = %email.to, subject = %email.subject, "sending");
    Ok(format!("sent to {}", email.to))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // RUST_LOG, QUEUE_LOG_FORMAT=json for a log collector; colour only on a terminal.
    queue::worker::init_logging()?;
    let mut builder = WorkerBuilder::from_env();
    // The environment wins over the example's defaults.
    if std::env::var("QUEUE_CONCURRENCY").is_err() {
        builder = builder.concurrency(10);
    }
    if std::env::var("QUEUE_QUEUES").is_err() {
        builder = builder.queue("emails", 1);
    }
    let report = builder.build().await?.run_until_signal().await?;
    println!("{report:?}");
    Ok(())
}
