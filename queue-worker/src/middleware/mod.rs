//! Middlewares wrap every handler call, tower-style: each gets the request and the rest of the
//! chain (`next`), and may act before, after or instead of it.
//!
//! Order, outermost first: [`Trace`] (a span per job), [`ResultCache`] (jobs declared with a
//! `cache_ttl` answer from the cache when they can), [`RateLimit`] (jobs declared with a
//! `rate_limit` wait for their turn), [`CatchPanic`] (a panic becomes a failed attempt),
//! [`Timeout`] (the job's per-attempt timeout), then user middlewares in the order they were
//! added, then the handler.

#[cfg(feature = "cache")]
mod cache;
mod catch_panic;
#[cfg(feature = "rate-limit")]
mod rate_limit;
mod timeout;
mod trace;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use queue_core::__private::HandlerFn;
use queue_core::wire::Job;
use queue_core::{JobContext, JobError};

#[cfg(feature = "cache")]
pub use cache::ResultCache;
pub use catch_panic::CatchPanic;
#[cfg(feature = "rate-limit")]
pub use rate_limit::RateLimit;
pub use timeout::Timeout;
pub use trace::Trace;

/// One handler call travelling through the chain.
#[derive(Debug)]
pub struct Request {
    /// What the handler will see.
    pub ctx: JobContext,
    /// The decoded envelope (read-only for middlewares); its `args` are moved into
    /// [`Request::args`] and empty here.
    pub job: Arc<Job>,
    /// The MessagePack arguments.
    pub args: Vec<u8>,
}

/// What a handler call produces: the encoded result, or a failed attempt.
pub type Response = Result<Vec<u8>, JobError>;

/// A layer around handler calls.
pub trait Middleware: Send + Sync + 'static {
    /// Handles `req`, normally by awaiting `next.run(req)`.
    fn call<'a>(&'a self, req: Request, next: Next<'a>) -> BoxFuture<'a, Response>;

    /// Pushes what the middleware counts locally (metrics) to Redis; the worker calls it on
    /// every heartbeat and once at shutdown. Nothing by default.
    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The built-in chain, outermost first, for the handlers of `registry` (the order is the one
/// documented at the top of this module). A job that declares a middleware this build does not
/// have (`cache_ttl` without the `cache` feature, `rate_limit` without `rate-limit`) is a
/// start-up error rather than a job that silently runs unprotected.
pub(crate) fn builtins(
    client: &queue_core::Client,
    registry: &crate::Registry,
) -> crate::Result<Vec<Arc<dyn Middleware>>> {
    let mut chain: Vec<Arc<dyn Middleware>> = vec![Arc::new(Trace)];
    let cached = registry.cache_ttls();
    #[cfg(feature = "cache")]
    if let Some(c) = ResultCache::new(client, cached) {
        chain.push(Arc::new(c));
    }
    #[cfg(not(feature = "cache"))]
    if let Some((job, _)) = cached.first() {
        return Err(crate::Error::Config(format!(
            "job {job:?} declares cache_ttl, but this worker was built without the `cache` feature"
        )));
    }
    let limited = registry.rate_limits();
    #[cfg(feature = "rate-limit")]
    if let Some(r) = RateLimit::new(client, limited)? {
        chain.push(Arc::new(r));
    }
    #[cfg(not(feature = "rate-limit"))]
    if let Some((job, _, _)) = limited.first() {
        return Err(crate::Error::Config(format!(
            "job {job:?} declares rate_limit, but this worker was built without the `rate-limit` feature"
        )));
    }
    #[cfg(not(all(feature = "cache", feature = "rate-limit")))]
    let _ = client;
    chain.push(Arc::new(CatchPanic));
    chain.push(Arc::new(Timeout));
    Ok(chain)
}

/// The rest of the chain after the current middleware.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    handler: HandlerFn,
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &self.rest.len())
            .finish()
    }
}

impl<'a> Next<'a> {
    pub(crate) fn new(chain: &'a [Arc<dyn Middleware>], handler: HandlerFn) -> Next<'a> {
        Next {
            rest: chain,
            handler,
        }
    }

    /// Runs the rest of the chain.
    pub fn run(self, req: Request) -> BoxFuture<'a, Response> {
        match self.rest.split_first() {
            Some((first, rest)) => first.call(
                req,
                Next {
                    rest,
                    handler: self.handler,
                },
            ),
            None => (self.handler)(req.ctx, req.args),
        }
    }
}
