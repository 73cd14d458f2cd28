use queue::{job, JobError};

pub struct NotSerde;

#[job]
async fn takes_not_serde(_a: NotSerde) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
