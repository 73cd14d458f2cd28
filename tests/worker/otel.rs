//! `init_tracing_otel` (feature `otel`; the suite's dev-dependencies turn it on): a worker exports its job span over OTLP/HTTP to the
//! collector the standard variables name, the span linked to the producer's trace context
//! (not parented by it), and flushes on shutdown; a malformed endpoint is a configuration
//! error. The worker runs in a child process, since a global subscriber is installed once per
//! process; the collector is a stand-in in this test that records what is posted to it.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use common::Env;
use queue::{job, JobContext, JobError, JobState, NewJob};

/// The producer's trace context (the W3C example): trace id, parent span id, sampled.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const SERVICE: &str = "queue-otel-test";

#[job(name = "otel.hello", queue = "otel")]
async fn hello(_n: u32, _ctx: JobContext) -> Result<(), JobError> {
    Ok(())
}

/// The child: installs the OpenTelemetry subscriber, runs one job with the producer's trace
/// context through a worker, then shuts the export down (which flushes). A no-op unless started
/// by the tests below.
#[tokio::test]
async fn child_otel() {
    let Ok(url) = std::env::var("QUEUE_OTEL_CHILD_URL") else {
        return;
    };
    // The worker crate's own function, which the facade re-exports under its `otel` feature:
    // the suite's dev-dependencies turn the worker's `otel` on, so this runs in the one build
    // of the suite instead of a second build of everything with the facade's feature.
    let otel =
        queue_worker::init_tracing_otel().unwrap_or_else(|e| panic!("init_tracing_otel: {e}"));
    let client = queue::Client::connect(&url).await.expect("connect");
    let running = common::start_worker(&client, &["otel.hello"], |b| b.queue("otel", 1)).await;
    let job = NewJob::of::<hello>(&1)
        .expect("encode")
        .traceparent(TRACEPARENT);
    let id = client.enqueue_job(job).await.expect("enqueue").id;
    let out = client
        .wait_for("otel", &id, Duration::from_secs(30))
        .await
        .expect("wait");
    assert_eq!(out.state, JobState::Completed);
    running.stop().await;
    otel.shutdown();
}

/// Runs `child_otel` with `endpoint` as `OTEL_EXPORTER_OTLP_ENDPOINT`; returns (success,
/// stderr). Asynchronous, so the collector on this test's runtime answers meanwhile.
async fn run_child(env: &Env, endpoint: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("current exe");
    let child = tokio::process::Command::new(exe)
        .arg(common::test_name(module_path!(), "child_otel"))
        .args(["--exact", "--nocapture", "--test-threads=1"])
        .env("QUEUE_OTEL_CHILD_URL", env.url())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", SERVICE)
        .env("RUST_LOG", "info")
        .env("QUEUE_LOG_FORMAT", "text")
        // The machine's own settings must not redirect the export.
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = common::bounded(Duration::from_secs(120), "the otel child", child)
        .await
        .expect("spawn child");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stand-in OTLP/HTTP collector on a free loopback port: records the body of every
/// `POST /v1/traces` and answers with an empty (successful) `ExportTraceServiceResponse`.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let recorded = bodies.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().expect("bodies").push(body.to_vec());
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), bodies)
}

#[tokio::test]
async fn the_job_span_is_exported_linked_to_its_producer() {
    let env = Env::start().await;
    let (endpoint, bodies) = collector().await;
    let (ok, stderr) = run_child(&env, &endpoint).await;
    assert!(ok, "{stderr}");

    // The child has exited: its shutdown flushed and waited for the collector's answer, so
    // every span it exported is recorded by now.
    let bodies = bodies.lock().expect("bodies").clone();
    assert!(
        !bodies.is_empty(),
        "nothing posted to /v1/traces:\n{stderr}"
    );
    let spans: Vec<Span> = bodies.iter().flat_map(|b| spans(b)).collect();
    let jobs: Vec<&Span> = spans.iter().filter(|s| s.name == "job").collect();
    assert_eq!(jobs.len(), 1, "one job span in {spans:#?}\n{stderr}");
    let span = jobs[0];

    assert_eq!(span.service, SERVICE, "{span:#?}");
    assert_eq!(span.attr("job"), Some("otel.hello"), "{span:#?}");
    assert_eq!(span.attr("queue"), Some("otel"), "{span:#?}");
    assert_eq!(span.attr("traceparent"), Some(TRACEPARENT), "{span:#?}");

    // Linked to the producer's span, remote and sampled as the header says.
    assert_eq!(span.links.len(), 1, "{span:#?}");
    let link = &span.links[0];
    assert_eq!(link.trace_id, unhex(TRACE_ID), "{span:#?}");
    assert_eq!(link.span_id, unhex(SPAN_ID), "{span:#?}");
    assert_eq!(link.flags & 0x1, 0x1, "sampled: {span:#?}");
    // SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE | SPAN_FLAGS_CONTEXT_IS_REMOTE.
    assert_eq!(link.flags & 0x300, 0x300, "remote: {span:#?}");
    // A link, not a parent: the job's span starts a trace of its own.
    assert!(span.parent_span_id.is_empty(), "{span:#?}");
    assert_eq!(span.trace_id.len(), 16, "{span:#?}");
    assert_ne!(span.trace_id, unhex(TRACE_ID), "{span:#?}");
}

#[tokio::test]
async fn a_malformed_endpoint_is_a_configuration_error() {
    let env = Env::start().await;
    let (ok, stderr) = run_child(&env, "not a url").await;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(
            "invalid worker configuration: OTEL_EXPORTER_OTLP_ENDPOINT=\"not a url\" is not a URL"
        ),
        "{stderr}"
    );
    let (ok, stderr) = run_child(&env, "https://collector.example:4318").await;
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("https is not built in"), "{stderr}");
}

/// What the test reads of an exported span.
#[derive(Debug, Default)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    /// The string-valued attributes.
    attributes: Vec<(String, String)>,
    links: Vec<Link>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Link {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    flags: u32,
}

/// The spans of an `ExportTraceServiceRequest` (opentelemetry/proto/trace/v1/trace.proto):
/// resource_spans = 1 { resource = 1 { attributes = 1 }, scope_spans = 2 { spans = 2 } }.
fn spans(body: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in bytes(body, 1) {
        let service = bytes(resource_spans, 1)
            .into_iter()
            .flat_map(|resource| bytes(resource, 1))
            .filter_map(key_value)
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v)
            .unwrap_or_default();
        for scope_spans in bytes(resource_spans, 2) {
            for span in bytes(scope_spans, 2) {
                out.push(decode_span(span, &service));
            }
        }
    }
    out
}

/// Span: trace_id = 1, parent_span_id = 4, name = 5, attributes = 9, links = 13
/// { trace_id = 1, span_id = 2, flags = 6 (fixed32) }.
fn decode_span(span: &[u8], service: &str) -> Span {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("UTF-8");
    let first = |n| {
        bytes(span, n)
            .first()
            .map(|b| b.to_vec())
            .unwrap_or_default()
    };
    Span {
        service: service.to_string(),
        name: text(&first(5)),
        trace_id: first(1),
        parent_span_id: first(4),
        attributes: bytes(span, 9).into_iter().filter_map(key_value).collect(),
        links: bytes(span, 13)
            .into_iter()
            .map(|link| {
                let mut l = Link::default();
                for (n, v) in fields(link) {
                    match (n, v) {
                        (1, Field::Bytes(b)) => l.trace_id = b.to_vec(),
                        (2, Field::Bytes(b)) => l.span_id = b.to_vec(),
                        (6, Field::Fixed32(f)) => l.flags = f,
                        _ => {}
                    }
                }
                l
            })
            .collect(),
    }
}

/// A KeyValue { key = 1, value = 2: AnyValue { string_value = 1 } } with a string value.
fn key_value(kv: &[u8]) -> Option<(String, String)> {
    let key = bytes(kv, 1).first().copied()?;
    let value = bytes(kv, 2).first().copied()?;
    let string = bytes(value, 1).first().copied()?;
    Some((
        String::from_utf8(key.to_vec()).ok()?,
        String::from_utf8(string.to_vec()).ok()?,
    ))
}

/// One protobuf field's value, by wire type.
#[derive(Debug)]
enum Field<'a> {
    Varint,
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The length-delimited fields numbered `number` of `message`.
fn bytes(message: &[u8], number: u64) -> Vec<&[u8]> {
    fields(message)
        .into_iter()
        .filter_map(|(n, v)| match v {
            Field::Bytes(b) if n == number => Some(b),
            _ => None,
        })
        .collect()
}

/// Every field of a protobuf message, in order; panics on malformed input (a test failure).
fn fields(mut buf: &[u8]) -> Vec<(u64, Field<'_>)> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first().expect("truncated varint");
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long")
    }
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(buf.len() >= n, "truncated field");
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        head
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf);
        let value = match tag & 7 {
            0 => {
                varint(&mut buf);
                Field::Varint
            }
            1 => {
                take(&mut buf, 8);
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)).expect("length");
                Field::Bytes(take(&mut buf, len))
            }
            5 => Field::Fixed32(u32::from_le_bytes(
                take(&mut buf, 4).try_into().expect("4 bytes"),
            )),
            other => panic!("wire type {other} in {buf:?}"),
        };
        out.push((tag >> 3, value));
    }
    out
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
