use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use queue_core::rate_limit::{Limit, RateLimiter};
use queue_core::{Action, Client, JobError};

use super::{Middleware, Next, Request, Response};

/// Limits how often jobs declared with `#[job(rate_limit = "100/1m", rate_key = "...")]` run,
/// across all workers. A job over its limit is snoozed until it may run (no attempt counted); a
/// handler's `JobError::rate_limited(retry_after)` (an upstream 429) pushes the whole key back.
pub struct RateLimit {
    by_job: HashMap<&'static str, (RateLimiter, String)>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("jobs", &self.by_job.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RateLimit {
    /// The limits of `jobs` (name, limit spec, key); `None` when no job has one.
    ///
    /// # Errors
    ///
    /// [`queue_core::Error::Config`] naming a job whose limit does not parse.
    pub(crate) fn new(
        client: &Client,
        jobs: Vec<(&'static str, &'static str, &'static str)>,
    ) -> queue_core::Result<Option<RateLimit>> {
        if jobs.is_empty() {
            return Ok(None);
        }
        let mut by_job = HashMap::new();
        for (name, spec, key) in jobs {
            let limit = Limit::parse(spec)
                .map_err(|e| queue_core::Error::Config(format!("job {name:?}: {e}")))?
                .named(format!("job:{spec}"));
            by_job.insert(
                name,
                (
                    RateLimiter::new(client.clone(), vec![limit]),
                    key.to_string(),
                ),
            );
        }
        Ok(Some(RateLimit { by_job }))
    }

    /// Pushes local allowed/rejected counts to the shared metrics.
    async fn flush_metrics(&self) {
        for (limiter, _) in self.by_job.values() {
            if let Err(e) = limiter.flush_metrics().await {
                tracing::debug!(error = %e, "rate limit metrics not flushed");
            }
        }
    }
}

impl Middleware for RateLimit {
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.flush_metrics())
    }

    fn call<'a>(&'a self, req: Request, next: Next<'a>) -> BoxFuture<'a, Response> {
        Box::pin(async move {
            let Some((limiter, key)) = self.by_job.get(req.ctx.name.as_str()) else {
                return next.run(req).await;
            };
            let d = limiter.check(key).await;
            if !d.allowed {
                let wait = d
                    .retry_after()
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(1));
                let reason = d.note.clone().unwrap_or_else(|| {
                    format!("rate limit {} of key {key:?}", limiter.limits()[0].name)
                });
                return Err(JobError::snooze(wait, reason));
            }
            let res = next.run(req).await;
            if let Err(e) = &res {
                if let Action::RateLimited(wait) = e.action() {
                    if let Err(err) = limiter.push_back(key, wait).await {
                        tracing::warn!(key, error = %err, "could not push the rate limit key back");
                    }
                }
            }
            res
        })
    }
}
