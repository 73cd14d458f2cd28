use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use queue_core::JobError;

use super::{Middleware, Next, Request, Response};

/// Fails an attempt that runs longer than the job's timeout (kind `timeout`); the handler's
/// future is dropped at that point.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeout;

impl Middleware for Timeout {
    fn call<'a>(&'a self, req: Request, next: Next<'a>) -> BoxFuture<'a, Response> {
        let limit = req.job.timeout();
        tokio::time::timeout(limit, next.run(req))
            .map(move |res| {
                res.unwrap_or_else(|_| {
                    Err(JobError::retry(format!("timed out after {limit:?}")).with_kind("timeout"))
                })
            })
            .boxed()
    }
}
