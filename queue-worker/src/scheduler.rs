//! The scheduler every worker runs: fires due cron ticks (exactly once across all workers, see
//! `queue_core::Cron`) and the built-in maintenance schedule.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use queue_core::admin::Admin;
use queue_core::cron::{due_ticks, next_tick, Cron, Fired, Schedule};
use queue_core::{Client, NewJob, Retention};
use tokio::sync::watch;

/// Work the maintenance schedule runs (expired sessions, other modules' cleanups). Runs on one
/// worker per tick.
pub type MaintenanceTask = Arc<dyn Fn(Client) -> BoxFuture<'static, ()> + Send + Sync>;

/// Name of the built-in maintenance schedule (every minute).
pub const MAINTENANCE: &str = "queue.maintenance";

/// Default maintenance schedule: every minute.
pub const MAINTENANCE_CRON: &str = "0 * * * * *";

pub(crate) fn maintenance_schedule(expr: &str) -> queue_core::Result<Schedule> {
    // Claimed through the same exactly-once tick as any schedule, on a key of its own; nothing
    // is enqueued: the winning worker runs the work itself.
    Schedule::new(
        MAINTENANCE,
        expr,
        NewJob::raw(MAINTENANCE, vec![0xc0]).queue(MAINTENANCE),
    )
}

pub(crate) struct Scheduler {
    pub client: Client,
    pub schedules: Vec<Schedule>,
    pub tasks: Vec<(String, MaintenanceTask)>,
    pub retention: Retention,
    pub maintenance: Schedule,
}

impl Scheduler {
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let cron = Cron::new(self.client.clone());
        while let Err(e) = cron.register(&self.schedules).await {
            tracing::warn!(error = %e, "cannot publish schedules; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
        let mut all = self.schedules.clone();
        all.push(self.maintenance.clone());
        if !self.schedules.is_empty() {
            tracing::info!(schedules = ?self.schedules.iter().map(Schedule::name).collect::<Vec<_>>(), "scheduler started");
        }
        loop {
            let now = Utc::now();
            for s in &all {
                if let Err(e) = self.fire_due(&cron, s, now).await {
                    tracing::warn!(schedule = s.name(), error = %e, "scheduler round failed");
                }
            }
            // Sleep until the next tick of any schedule (a millisecond past it), at most a
            // minute; ticks are due when their instant has passed.
            let now = Utc::now();
            let next = all
                .iter()
                .filter_map(|s| next_tick(s.expr(), s.zone(), now))
                .map(|t| (t.at - now).to_std().unwrap_or(Duration::ZERO))
                .min()
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(next + Duration::from_millis(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn fire_due(
        &self,
        cron: &Cron,
        s: &Schedule,
        now: chrono::DateTime<Utc>,
    ) -> queue_core::Result<()> {
        let last = cron.last(s).await?;
        let maintenance = s.name() == MAINTENANCE;
        for tick in due_ticks(s.expr(), s.zone(), last, now, s.misfire_policy()) {
            match cron.fire(s, &tick, !maintenance).await? {
                Fired::Fired(_) if maintenance => {
                    tracing::debug!(tick = %tick.local, "running maintenance");
                    self.maintain().await;
                }
                Fired::Fired(id) => {
                    tracing::debug!(schedule = s.name(), tick = %tick.local, %id, "tick fired")
                }
                Fired::Deduplicated(holder) => {
                    tracing::debug!(schedule = %s.name(), %holder, "tick fired; its job is a duplicate of a running one");
                }
                Fired::AlreadyFired | Fired::Paused => {}
            }
        }
        Ok(())
    }

    /// Trims every queue's retained jobs by count and age (queues that are idle never reach the
    /// trimming done on completion), drops the fetch receipts of dead workers, prunes session
    /// indexes, then runs the registered tasks.
    async fn maintain(&self) {
        let admin = Admin::new(self.client.clone());
        let now = chrono::Utc::now().timestamp_millis();
        // Without the worker records, no receipt is known to be dead: none is dropped.
        let live: Option<std::collections::HashSet<String>> = match admin.workers().await {
            Ok(ws) => Some(
                ws.into_iter()
                    .filter(|w| w.alive(now))
                    .map(|w| w.id)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "maintenance cannot list workers");
                None
            }
        };
        match admin.queues().await {
            Ok(queues) => {
                for q in queues {
                    if let Err(e) = admin.trim(&q, &self.retention).await {
                        tracing::warn!(queue = %q, error = %e, "maintenance trim failed");
                    }
                    if let Some(live) = &live {
                        if let Err(e) = admin.prune_receipts(&q, live).await {
                            tracing::warn!(queue = %q, error = %e, "maintenance: receipt pruning failed");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "maintenance cannot list queues"),
        }
        // Expired sessions vanish by TTL; their users' indexes are pruned here.
        #[cfg(feature = "sessions")]
        match queue_core::session::Sessions::new(self.client.clone()) {
            Ok(sessions) => {
                if let Err(e) = sessions.cleanup().await {
                    tracing::warn!(error = %e, "maintenance: session index cleanup failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "maintenance: sessions unavailable"),
        }
        for (name, task) in &self.tasks {
            tracing::debug!(task = %name, "maintenance task");
            task(self.client.clone()).await;
        }
    }
}
