use std::panic::AssertUnwindSafe;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use queue_core::JobError;

use super::{Middleware, Next, Request, Response};

/// Turns a panicking handler into a failed attempt (kind `panic`), so one bad job never takes
/// the worker down.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanic;

impl Middleware for CatchPanic {
    fn call<'a>(&'a self, req: Request, next: Next<'a>) -> BoxFuture<'a, Response> {
        // The handler's state is dropped with the future, so nothing observes it after the
        // panic: asserting unwind safety is sound here.
        AssertUnwindSafe(next.run(req))
            .catch_unwind()
            .map(|res| match res {
                Ok(r) => r,
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_string());
                    Err(JobError::retry(format!("handler panicked: {msg}")).with_kind("panic"))
                }
            })
            .boxed()
    }
}
