//! The whole first step: `cargo run --example quickstart`.
//!
//! Defines three jobs (one fails once and retries, one delayed, one with a unique key),
//! enqueues them, runs a worker until they finish and prints what happened. With no `REDIS_URL`
//! it starts a throwaway `redis-server` from `PATH` and stops it at the end.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use queue::testing::RedisServer;
use queue::{job, Client, JobContext, JobError, JobState, NewJob, WorkerBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Invoice {
    customer: String,
    cents: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    invoice: String,
    attempt: u32,
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails on its first attempt (a flaky payment gateway), succeeds on the retry.
#[job(
    name = "billing.charge",
    queue = "quickstart",
    backoff = "200ms",
    max_attempts = 3
)]
async fn charge(invoice: Invoice, ctx: JobContext) -> Result<Receipt, JobError> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(JobError::retry("payment gateway timed out"));
    }
    Ok(Receipt {
        invoice: format!("{} {} cents", invoice.customer, invoice.cents),
        attempt: ctx.attempt,
    })
}

/// Sent with a delay.
#[job(name = "email.reminder", queue = "quickstart")]
async fn reminder(to: String) -> Result<String, JobError> {
    Ok(format!("reminded {to}"))
}

/// Enqueued twice with the same unique key: runs once.
#[job(name = "report.nightly", queue = "quickstart")]
async fn nightly_report(day: String) -> Result<String, JobError> {
    Ok(format!("report for {day}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();

    // An embedded default: a throwaway redis-server when REDIS_URL is not set.
    let (_server, url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = RedisServer::start()?;
            let url = server.url().to_string();
            println!("started a throwaway redis-server at {url}");
            (Some(server), url)
        }
    };

    let client = Client::connect(&url).await?;
    let started = Instant::now();

    let charge_job = client
        .enqueue::<charge>(&Invoice {
            customer: "ACME".into(),
            cents: 4200,
        })
        .await?;
    let reminder_job = client
        .enqueue_job(
            NewJob::of::<reminder>(&"ada@example.com".to_string())?
                .delay(Duration::from_millis(500)),
        )
        .await?;
    let day = "2026-11-26".to_string();
    let first = client
        .enqueue_job(
            NewJob::of::<nightly_report>(&day)?
                .unique("nightly:2026-11-26", Duration::from_secs(3600)),
        )
        .await?;
    let second = client
        .enqueue_job(
            NewJob::of::<nightly_report>(&day)?
                .unique("nightly:2026-11-26", Duration::from_secs(3600)),
        )
        .await?;
    println!("enqueued billing.charge {}", charge_job.id);
    println!(
        "enqueued email.reminder {} (runs in 500 ms)",
        reminder_job.id
    );
    println!(
        "enqueued report.nightly {} and again: duplicate={} (same id: {})",
        first.id,
        second.duplicate,
        second.id == first.id
    );

    let worker = WorkerBuilder::with_client(client.clone())
        .queue("quickstart", 1)
        .concurrency(5)
        .build()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));

    let timeout = Duration::from_secs(20);
    let charged = client
        .wait_for("quickstart", &charge_job.id, timeout)
        .await?;
    let receipt: Receipt = charged.result()?;
    println!(
        "billing.charge {}: {:?} after {} attempts",
        charged.state, receipt.invoice, receipt.attempt
    );
    let reminded = client
        .wait_for("quickstart", &reminder_job.id, timeout)
        .await?;
    println!(
        "email.reminder {}: {:?}",
        reminded.state,
        reminded.result::<String>()?
    );
    let report = client.wait_for("quickstart", &first.id, timeout).await?;
    println!(
        "report.nightly {}: {:?}",
        report.state,
        report.result::<String>()?
    );

    let _ = stop_tx.send(());
    let summary = running.await??;
    println!(
        "worker stopped: {} completed, {} failed attempts, {} dead in {:.2?}",
        summary.completed,
        summary.failed,
        summary.dead,
        started.elapsed()
    );
    let all_done = [&charged, &reminded, &report]
        .iter()
        .all(|o| o.state == JobState::Completed);
    if !all_done || summary.completed != 3 || receipt.attempt != 2 {
        return Err("quickstart did not finish as expected".into());
    }
    println!("all jobs finished");
    Ok(())
}
