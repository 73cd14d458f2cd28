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
        // A link, not a parent: the job runs after its producer's request ended, once per
        // attempt, so each attempt is a trace of its own pointing back at the producer (the
        // OpenTelemetry messaging conventions' consumer side).
        #[cfg(feature = "otel")]
        if let Some(producer) = req.ctx.traceparent.as_deref().and_then(remote_context) {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            span.add_link(producer);
        }
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

/// The producer's span context from its `traceparent`: remote, sampled as the header says.
/// `None` for anything that is not a W3C trace context: an envelope written by a foreign
/// producer may hold anything.
#[cfg(feature = "otel")]
fn remote_context(traceparent: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    if !queue_core::wire::valid_traceparent(traceparent) {
        return None;
    }
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    // Only the sampled bit is defined; the others are not ours to pass on.
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    let cx = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    cx.is_valid().then_some(cx)
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

    #[cfg(feature = "otel")]
    #[test]
    fn a_traceparent_becomes_a_remote_span_context() {
        use super::remote_context;

        let cx = remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled());
        assert!(cx.is_remote());
        let unsampled = remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .expect("valid");
        assert!(!unsampled.is_sampled());
        // A later version may append fields; the first four are read.
        assert!(
            remote_context("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-x").is_some()
        );
        for bad in [
            "",
            "00-not-a-trace-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(remote_context(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(Printable("mail.send").to_string(), "mail.send");
        assert_eq!(
            Printable("a\nb\u{1b}[31m\"é").to_string(),
            "a\\nb\\u{1b}[31m\"é"
        );
    }
}
