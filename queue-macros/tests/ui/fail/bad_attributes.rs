use queue::{job, JobError};

// Every mistake is reported in one compile.
#[job(name = "", priority = 300, max_attempts = 0, timeout = "soon", retries = 3)]
async fn many_mistakes(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[job(backoff = "1s", backoff_fixed = "2s")]
async fn two_policies(_n: u32) -> Result<(), JobError> {
    Ok(())
}

#[job(queue = "has space")]
async fn bad_queue(_n: u32) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
