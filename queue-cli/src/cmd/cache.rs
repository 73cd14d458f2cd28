//! `queue cache stats`: hits, misses, loads, stampede waits and invalidations per policy.

use std::process::ExitCode;

use serde::Serialize;

use crate::output::{printable, Out, Table};
use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Figures per TTL policy, across all processes (flushed by caches about every second)
    Stats,
}

#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    stats: queue::cache::CacheStats,
    hit_ratio: f64,
    avg_load_ms: f64,
}

pub async fn run(g: &Global, out: Out, cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Stats = cmd;
    let admin = g.connect().await?;
    let rows: Vec<Row> = queue::cache::stats(admin.client())
        .await?
        .into_iter()
        .map(|s| {
            let reads = s.hits + s.misses;
            let hit_ratio = if reads == 0 {
                0.0
            } else {
                s.hits as f64 / reads as f64
            };
            let avg_load_ms = if s.loads == 0 {
                0.0
            } else {
                s.load_us as f64 / s.loads as f64 / 1000.0
            };
            Row {
                stats: s,
                hit_ratio,
                avg_load_ms,
            }
        })
        .collect();
    if out.json {
        out.json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "POLICY",
        "HITS",
        "MISSES",
        "HIT RATIO",
        "LOADS",
        "AVG LOAD",
        "STAMPEDE WAITS",
        "INVALIDATIONS",
        "ERRORS",
    ]);
    for r in &rows {
        let s = &r.stats;
        t.row(vec![
            printable(&s.policy).into_owned(),
            s.hits.to_string(),
            s.misses.to_string(),
            format!("{:.1}%", r.hit_ratio * 100.0),
            s.loads.to_string(),
            format!("{:.2} ms", r.avg_load_ms),
            s.stampede_waits.to_string(),
            s.invalidations.to_string(),
            if s.errors > 0 {
                out.red(&s.errors.to_string())
            } else {
                "0".into()
            },
        ]);
    }
    if t.is_empty() {
        out.line(&out.dim("no cache metrics yet"))?;
    } else {
        out.line(&t.render(&out))?;
    }
    Ok(ExitCode::SUCCESS)
}
