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
            // Escaped: a name from a foreign producer may hold a newline or a colour code.
            job = %Printable(&req.ctx.name),
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

/// A string as a log shows it: as it is, control characters escaped (`\n`, `\u{1b}`), no quotes.
struct Printable<'a>(&'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Printable;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(Printable("mail.send").to_string(), "mail.send");
        assert_eq!(
            Printable("a\nb\u{1b}[31m\"é").to_string(),
            "a\\nb\\u{1b}[31m\"é"
        );
    }
}
