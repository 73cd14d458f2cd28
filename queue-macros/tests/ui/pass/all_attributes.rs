use queue::{job, JobContext, JobError, JobType};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Invoice {
    pub id: u64,
}

#[job(
    name = "billing.send_invoice",
    queue = "billing",
    priority = 7,
    max_attempts = 5,
    backoff = "2s",
    backoff_max = "10m",
    timeout = "45s",
    unique_for = "1h"
)]
pub async fn send_invoice(invoice: Invoice, ctx: JobContext) -> Result<u64, JobError> {
    let _ = ctx.attempt;
    Ok(invoice.id)
}

#[job]
async fn default_name(_n: u32) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

#[job(cron = "0 30 2 * * *", cron_tz = "Europe/Paris")]
async fn nightly(_unit: ()) -> Result<(), JobError> {
    Ok(())
}

#[job(backoff_fixed = "5s")]
async fn fixed(_s: String) -> Result<(), std::io::Error> {
    Ok(())
}

fn main() {
    assert_eq!(<send_invoice as JobType>::NAME, "billing.send_invoice");
    let o = <send_invoice as JobType>::options();
    assert_eq!(o.queue.as_deref(), Some("billing"));
    assert_eq!(o.priority, Some(7));
    assert_eq!(o.max_attempts, Some(5));
    assert_eq!(o.timeout, Some(std::time::Duration::from_secs(45)));
    assert_eq!(o.unique_for, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(<default_name as JobType>::NAME, "default_name");
    assert!(<fixed as JobType>::options().backoff.is_some());
    // The function itself is still callable.
    let _fut = send_invoice;
}
