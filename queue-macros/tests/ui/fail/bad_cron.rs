use queue::{job, JobError};

#[job(cron_tz = "Europe/Paris")]
async fn zone_without_expression(_u: ()) -> Result<(), JobError> {
    Ok(())
}

#[job(cron = 5)]
async fn expression_not_a_string(_u: ()) -> Result<(), JobError> {
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Args(u32);

// A scheduled job runs with its arguments' Default value.
#[job(cron = "@hourly")]
async fn args_without_default(_a: Args) -> Result<(), JobError> {
    Ok(())
}

fn main() {}
