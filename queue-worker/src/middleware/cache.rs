use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use queue_core::cache::{Cache, CacheKey, CachePolicy};
use queue_core::{Client, JobError};

use super::{Middleware, Next, Request, Response};

/// Memoises the results of jobs declared with `#[job(cache_ttl = "5m")]` by their arguments:
/// the same job with the same arguments within the TTL returns the cached result without
/// running the handler. A failed run is never cached. Hits and misses are counted under the
/// policy `job:<name>` (`queue cache stats`).
pub struct ResultCache {
    cache: Cache,
    policies: HashMap<&'static str, CachePolicy>,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("jobs", &self.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ResultCache {
    /// The result cache for `jobs` (name, TTL in ms); `None` when no job has one.
    pub(crate) fn new(client: &Client, jobs: Vec<(&'static str, u64)>) -> Option<ResultCache> {
        if jobs.is_empty() {
            return None;
        }
        let policies = jobs
            .into_iter()
            .map(|(name, ms)| {
                (
                    name,
                    CachePolicy::new(format!("job:{name}"), Duration::from_millis(ms)),
                )
            })
            .collect();
        Some(ResultCache {
            cache: Cache::new(client.clone()),
            policies,
        })
    }

    async fn flush_metrics(&self) {
        if let Err(e) = self.cache.flush_stats().await {
            tracing::debug!(error = %e, "cache metrics not flushed");
        }
    }
}

impl Middleware for ResultCache {
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.flush_metrics())
    }

    fn call<'a>(&'a self, req: Request, next: Next<'a>) -> BoxFuture<'a, Response> {
        Box::pin(async move {
            let Some(policy) = self.policies.get(req.ctx.name.as_str()) else {
                return next.run(req).await;
            };
            let key = CacheKey::new(
                "jobs",
                format!(
                    "{}:{}",
                    req.ctx.name,
                    queue_core::cache::hash_bytes(&req.args)
                ),
            );
            // The loader runs the handler; only a success is stored (an error is returned as
            // it is, and nothing is cached).
            let outcome = self
                .cache
                .get_or_load(&key, policy, || async move {
                    next.run(req)
                        .await
                        .map(|bytes| Some(serde_bytes::ByteBuf::from(bytes)))
                })
                .await;
            match outcome {
                Ok(Some(bytes)) => Ok(bytes.into_vec()),
                Ok(None) => Err(JobError::retry("cached job result vanished")),
                Err(e) => Err(e),
            }
        })
    }
}
