use queue::{job, JobError};

#[job]
fn not_async(_n: u32) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
