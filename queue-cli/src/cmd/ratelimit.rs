//! `queue ratelimit stats`: allowed and rejected requests per limit, across all processes.

use std::process::ExitCode;

use serde::Serialize;

use crate::output::{printable, Out, Table};
use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Allowed and rejected counts per limit (flushed by limiters about every second)
    Stats,
}

#[derive(Debug, Serialize)]
struct Row {
    limit: String,
    allowed: u64,
    rejected: u64,
    rejected_pct: f64,
}

pub async fn run(g: &Global, out: Out, cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Stats = cmd;
    let admin = g.connect().await?;
    let rows: Vec<Row> = queue::rate_limit::stats(admin.client())
        .await?
        .into_iter()
        .map(|(limit, allowed, rejected)| {
            let total = allowed + rejected;
            let rejected_pct = if total == 0 {
                0.0
            } else {
                rejected as f64 * 100.0 / total as f64
            };
            Row {
                limit,
                allowed,
                rejected,
                rejected_pct,
            }
        })
        .collect();
    if out.json {
        out.json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["LIMIT", "ALLOWED", "REJECTED", "REJECTED %"]);
    for r in &rows {
        t.row(vec![
            printable(&r.limit).into_owned(),
            r.allowed.to_string(),
            r.rejected.to_string(),
            format!("{:.1}%", r.rejected_pct),
        ]);
    }
    if t.is_empty() {
        out.line(&out.dim("no rate-limit metrics yet"))?;
    } else {
        out.line(&t.render(&out))?;
    }
    Ok(ExitCode::SUCCESS)
}
