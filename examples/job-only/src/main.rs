//! A worker and a producer that use nothing but the job engine (no toolkit features).

use queue::{job, Client, JobError, WorkerBuilder};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

#[job(name = "job_only.ping", timeout = "5s")]
async fn ping(args: Ping) -> Result<u32, JobError> {
    Ok(args.n + 1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(&std::env::var("REDIS_URL")?).await?;
    client.enqueue::<ping>(&Ping { n: 1 }).await?;
    WorkerBuilder::with_client(client)
        .build()
        .await?
        .run_until_signal()
        .await?;
    Ok(())
}
