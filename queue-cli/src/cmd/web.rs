//! `queue web --addr`: the web dashboard, standalone.

use std::process::ExitCode;

use crate::output::Out;
use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_g: &Global, _out: Out, _a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("queue web is not built yet")
}
