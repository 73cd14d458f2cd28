//! The one duration grammar of the project: digits, then a unit, `ms`, `s`, `m`, `h` or `d`
//! ("500ms", "30s", "10m", "2h", "1d"); surrounding spaces are ignored.
//!
//! `#[job]` checks its attributes at compile time with this same file (queue-macros includes
//! it), the CLI parses its flags with it and rate-limit specs (`100/1m`) build on it, so a
//! duration one of them accepts, every other accepts. It depends on nothing but `std` for that
//! reason.

use std::fmt;
use std::time::Duration;

/// A string that is not a duration of the grammar above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: expected digits and a unit (ms, s, m, h, d), e.g. 500ms, 30s, 10m, 2h, 1d",
            self.input
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration of the grammar above.
///
/// # Errors
///
/// [`DurationError`] when the digits or the unit are missing, the unit is unknown, or the value
/// overflows.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError {
        input: s.to_string(),
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Parses a rate, `<count>/<period>` ("100/1m", "10/s": a period without digits means one of
/// its unit), into the count and the period. Both must be positive.
// A build of queue-core without the `rate-limit` feature does not call it.
#[allow(dead_code)]
pub(crate) fn parse_rate(spec: &str) -> Option<(u64, Duration)> {
    let (count, per) = spec.trim().split_once('/')?;
    let count: u64 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let per = per.trim();
    let period = if per.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(per)
    } else {
        parse_duration(&format!("1{per}"))
    };
    Some((count, period.ok().filter(|d| !d.is_zero())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("100/1m"), Some((100, Duration::from_secs(60))));
        assert_eq!(parse_rate(" 10 / s "), Some((10, Duration::from_secs(1))));
        for bad in ["0/1m", "10/0s", "10", "x/1m", "10/1x"] {
            assert_eq!(parse_rate(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_in_the_grammar() {
        for bad in [
            "",
            "s",
            "10",
            "10x",
            "1.5s",
            "-1s",
            "10 s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
