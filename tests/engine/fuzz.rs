//! Target 9 of the hostile-input issue: arbitrary bytes and strings fed to every parser of
//! untrusted input (envelope decode, member parsing, the cron parser, the duration parser, and
//! the CLI's JSON-to-MessagePack conversion) give a value or an error, never a panic; a
//! declared length far beyond the input allocates nothing. 10,000 cases per property by
//! default, 1,000,000 with `QUEUE_SOAK=1`. No Redis: these are the parsers alone.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    if std::env::var("QUEUE_SOAK").is_ok_and(|v| v == "1") {
        1_000_000
    } else {
        10_000
    }
}

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// Bytes that look like members often enough to reach the envelope decoder: a valid header
/// followed by arbitrary bytes, or arbitrary bytes altogether.
fn member_like() -> impl Strategy<Value = Vec<u8>> {
    let header = "[0-9a-f]{2}[0-7][0-9A-HJKMNP-TV-Z]{25}";
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (header, proptest::collection::vec(any::<u8>(), 0..600)).prop_map(|(h, rest)| {
            let mut m = h.into_bytes();
            m.extend(rest);
            m
        }),
    ]
}

#[test]
fn member_parsing_never_panics() {
    run(member_like(), |member| {
        let _ = queue::wire::member_id(&member);
        let _ = queue::wire::decode_member(&member, "q");
        let _ = queue::Outcome::decode(&member);
        Ok(())
    });
}

#[test]
fn the_cron_parser_never_panics() {
    let fields = "[0-9*/,\\-A-Za-z?LW#]{0,12}";
    let expr = proptest::collection::vec(fields, 0..8).prop_map(|f| f.join(" "));
    run(prop_oneof![expr, any::<String>()], |s| {
        let _ = queue::cron::CronExpr::parse(&s);
        let _ = queue::cron::parse_tz(&s);
        Ok(())
    });
}

#[test]
fn the_duration_parser_never_panics() {
    let like = "[0-9]{0,25}(\\.[0-9]{0,5})?(ns|us|ms|s|m|h|d|w|y)?";
    run(prop_oneof![like, any::<String>()], |s| {
        let _ = queue::parse_duration(&s);
        Ok(())
    });
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The CLI turns `--args` JSON into MessagePack with `encode_value`: whatever the JSON, it
/// encodes, and decodes back to the same value.
#[test]
fn json_arguments_round_trip_through_messagepack() {
    run(json(), |value| {
        let bytes = queue::wire::encode_value(&value, "args")
            .map_err(|e| TestCaseError::fail(format!("{value} does not encode: {e}")))?;
        let back: serde_json::Value = queue::wire::decode_value(&bytes, "args")
            .map_err(|e| TestCaseError::fail(format!("{value} does not decode: {e}")))?;
        prop_assert_eq!(back, value);
        Ok(())
    });
}

/// MessagePack headers that declare 4 GiB of string, binary, array or map in a few bytes: the
/// decoder must refuse them without reserving the declared size (that would abort the
/// process, and any producer could send one).
#[test]
fn declared_lengths_beyond_the_input_allocate_nothing() {
    let huge = [0xffu8, 0xff, 0xff, 0xff];
    let heads: [(u8, &str); 4] = [
        (0xdb, "str 32"),
        (0xc6, "bin 32"),
        (0xdd, "array 32"),
        (0xdf, "map 32"),
    ];
    for (marker, what) in heads {
        let mut body = vec![marker];
        body.extend_from_slice(&huge);
        body.extend_from_slice(&[0u8; 16]);
        assert!(
            queue::wire::decode_value::<serde_json::Value>(&body, "args").is_err(),
            "{what}"
        );
        // The same inside an envelope field.
        let mut envelope = vec![0x81, 0xa1, b'a', marker];
        envelope.extend_from_slice(&huge);
        let mut member = b"ff01ARZ3NDEKTSV4RRFFQ69G5FAV".to_vec();
        member.extend_from_slice(&envelope);
        assert!(queue::wire::decode_member(&member, "q").is_err(), "{what}");
    }
}
