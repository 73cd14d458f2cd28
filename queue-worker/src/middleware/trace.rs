use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tracing::Instrument;

use super::{Middleware, Next, Request, Response};

/// Runs each job inside a `job` tracing span (id, name, queue, attempt) and logs its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trace;

impl Middleware for Trace {
    fn call<'a>(&'a self, req: Request, next: Next<'a>) -> BoxFuture<'a, Response> {
        let span = tracing::info_span!(
            "job",
            id = %req.ctx.id,
            // `job`, not `name`: structured formats give the span's own name that key.
            // Debug-formatted (quoted): a name from a foreign producer may hold a newline.
            job = ?req.ctx.name,
            queue = %req.ctx.queue,
            attempt = req.ctx.attempt,
            // The producer's trace context: a collector joins the job to its producer's trace.
            traceparent = req.ctx.traceparent.as_deref().unwrap_or(""),
        );
        async move {
            let started = std::time::Instant::now();
            let res = next.run(req).await;
            match &res {
                Ok(_) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "job completed"),
                Err(e) => tracing::warn!(elapsed_ms = started.elapsed().as_millis() as u64, error = %e, "job attempt failed"),
            }
            res
        }
        .instrument(span)
        .boxed()
    }
}
