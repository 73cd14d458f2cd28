//! `queue workers`.

use std::process::ExitCode;

use serde::Serialize;

use crate::output::{printable, relative, Out, Table};
use crate::Global;

#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    info: queue::admin::WorkerInfo,
    alive: bool,
}

pub async fn run(g: &Global, out: Out) -> anyhow::Result<ExitCode> {
    let admin = g.connect().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let rows: Vec<Row> = admin
        .workers()
        .await?
        .into_iter()
        .map(|w| Row {
            alive: w.alive(now),
            info: w,
        })
        .collect();
    if out.json {
        out.json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "WORKER",
        "STATUS",
        "HOST",
        "PID",
        "QUEUES",
        "CONCURRENCY",
        "IN FLIGHT",
        "STARTED",
        "LAST BEAT",
    ]);
    for r in &rows {
        let w = &r.info;
        t.row(vec![
            printable(&w.id).into_owned(),
            if r.alive {
                out.green("alive")
            } else {
                out.red("dead")
            },
            printable(&w.host).into_owned(),
            w.pid.to_string(),
            printable(&w.queues).into_owned(),
            w.concurrency.to_string(),
            w.in_flight.to_string(),
            relative(w.started_ms, now),
            relative(w.last_beat_ms, now),
        ]);
    }
    if t.is_empty() {
        out.line(&out.dim("no workers have sent a heartbeat in the last hour"))?;
    } else {
        out.line(&t.render(&out))?;
    }
    Ok(ExitCode::SUCCESS)
}
