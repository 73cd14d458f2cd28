use queue::{job, JobError};

#[job]
async fn no_arguments() -> Result<(), JobError> {
    Ok(())
}

#[job]
async fn borrowed(_s: &str) -> Result<(), JobError> {
    Ok(())
}

#[job]
async fn generic<T>(_t: T) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
