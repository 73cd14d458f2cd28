//! `/`: every queue's counts and last-hour sparkline, the history chart of all queues, Redis
//! memory and policy.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::Extension;
use queue_core::admin::State as JobState;

use super::{chart_block, history, App, OrPage, PageResult, Range};
use crate::html::{self, esc, Ctx};

/// The states a queue's row counts, in their order (also the live stream's).
pub(super) const STATES: [JobState; 7] = [
    JobState::Pending,
    JobState::Scheduled,
    JobState::Retrying,
    JobState::Recovered,
    JobState::Active,
    JobState::Dead,
    JobState::Completed,
];

/// How many queues get a sparkline on the overview.
const SPARKLINES: usize = 50;

/// A count cell the live stream keeps current.
pub(super) fn live_cell(queue: &str, state: JobState, n: u64) -> String {
    format!(
        r#"<td class="n" data-live="{}|{}">{}</td>"#,
        esc(queue),
        state.name(),
        html::num(n)
    )
}

pub(super) async fn page(
    State(app): State<App>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let range = Range::parse(q.get("range").map(String::as_str));
    let queues = app.admin.queues().await.or_page(&ctx)?;
    // Each queue on its own: one that cannot be read (a key of the wrong type) shows its error
    // in its row, and the others still show.
    let stats = futures_util::future::join_all(queues.iter().map(|q| app.admin.stats(q))).await;
    let readable: Vec<String> = queues
        .iter()
        .zip(&stats)
        .filter(|(_, s)| s.is_ok())
        .map(|(q, _)| q.clone())
        .collect();
    // The rows' sparklines (a minute a point): for the first SPARKLINES queues only, an hour
    // being 60 reads a queue; for every queue when the chart is the hour too, whose figures
    // are then their sum (each minute read once).
    let spark_count = if range == Range::Hour {
        queues.len()
    } else {
        SPARKLINES
    };
    let sparks = futures_util::future::join_all(
        queues
            .iter()
            .take(spark_count)
            .map(|q| history(&app.admin, std::slice::from_ref(q), Range::Hour, None)),
    )
    .await;
    let (steps, total) = if range == Range::Hour {
        let mut steps: Vec<queue_core::admin::HistoryStep> = Vec::new();
        let mut total = queue_core::admin::Counts::default();
        for (q_steps, q_total) in sparks.iter().flatten() {
            if steps.is_empty() {
                steps = q_steps.clone();
            } else {
                for (into, s) in steps.iter_mut().zip(q_steps) {
                    into.counts.merge(&s.counts);
                }
            }
            total.merge(q_total);
        }
        (steps, total)
    } else {
        history(&app.admin, &readable, range, None)
            .await
            .or_page(&ctx)?
    };
    let server = app.admin.server().await.ok();
    let now = chrono::Utc::now().timestamp_millis();

    let mut body = String::new();
    body.push_str("<h1>Queues</h1>");
    body.push_str(&chart_block(&ctx, "/", range, &steps, &total));
    body.push_str(r#"<section class="card"><div class="scroll"><table><thead><tr><th>queue</th>"#);
    for s in STATES {
        let _ = write!(body, r#"<th class="n">{}</th>"#, s.name());
    }
    body.push_str(r#"<th>last hour</th><th class="n">done / min</th><th class="n">fail % 1h</th><th>oldest pending</th></tr></thead><tbody>"#);
    if sparks.len() < queues.len() {
        let _ = write!(
            body,
            r#"<tr><td colspan="12" class="empty">{} queues: the first {} have a sparkline (all of them on the 1h view).</td></tr>"#,
            queues.len(),
            sparks.len()
        );
    }
    if stats.is_empty() {
        body.push_str(r#"<tr><td colspan="12" class="empty">No queue yet: enqueue a job and it shows here.</td></tr>"#);
    }
    for (i, (queue, s)) in queues.iter().zip(&stats).enumerate() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                let _ = write!(
                    body,
                    r#"<tr><td>{}</td><td colspan="11" class="error">{}</td></tr>"#,
                    esc(queue),
                    esc(&e.to_string())
                );
                continue;
            }
        };
        let spark = match sparks.get(i) {
            Some(Ok((steps, _))) => {
                let values: Vec<u64> = steps.iter().map(|m| m.counts.completed).collect();
                crate::chart::sparkline(&values)
            }
            _ => String::new(),
        };
        let paused = if s.paused {
            r#" <span class="badge warn">paused</span>"#
        } else {
            ""
        };
        let _ = write!(
            body,
            r#"<tr><td><a href="{}">{}</a>{paused}</td>"#,
            ctx.href(&format!("/queues/{}", html::enc(&s.queue))),
            esc(&s.queue)
        );
        for state in STATES {
            body.push_str(&live_cell(&s.queue, state, s.count(state)));
        }
        let _ = write!(
            body,
            r#"<td>{spark}</td><td class="n">{}</td><td class="n">{:.1}</td><td>{}</td></tr>"#,
            html::num(s.processed_1m),
            s.error_rate_1h * 100.0,
            s.oldest_pending_ms
                .map_or_else(|| "-".into(), |age| esc(&html::ago(now - age, now)))
        );
    }
    body.push_str("</tbody></table></div></section>");
    if let Some(info) = server {
        let memory = if info.maxmemory > 0 {
            format!(
                "{} of {} ({:.0} %)",
                bytes(info.used_memory),
                bytes(info.maxmemory),
                info.used_memory as f64 * 100.0 / info.maxmemory as f64
            )
        } else {
            format!("{} (no maxmemory)", bytes(info.used_memory))
        };
        let _ = write!(
            body,
            r#"<section class="card"><h2>Redis</h2><dl class="figures"><div><dt>version</dt><dd>{}</dd></div><div><dt>memory</dt><dd>{}</dd></div><div><dt>eviction policy</dt><dd>{}</dd></div><div><dt>clients</dt><dd>{}</dd></div></dl></section>"#,
            esc(&info.version),
            esc(&memory),
            esc(&info.maxmemory_policy),
            html::num(info.connected_clients)
        );
    }
    Ok(Html(html::page(&ctx, "Queues", "Overview", &body)).into_response())
}

/// `12.3 MiB`.
fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
}
