//! Encoding of everything stored in Redis. The only file that names `rmp_serde`.
//!
//! A waiting job is one sorted-set member: `PP` (two lowercase hex digits of `255 - priority`),
//! the 26-character job id, then the MessagePack envelope. All members of the pending set share
//! score 0, so Redis orders them by these bytes: highest priority first, then by id, which is a
//! monotonic ULID, i.e. enqueue order. Keeping the envelope inside the member makes a waiting job
//! cost one sorted-set entry and lets a fetch return the job without a second lookup.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::job::{Job, JobId, JobState, WIRE_VERSION};
use crate::error::{Error, Result};

/// Bytes before the envelope in a member: priority prefix and id.
pub const MEMBER_HEADER: usize = 2 + JobId::LEN;

/// Encodes a handler's arguments (or result) as MessagePack with named fields.
///
/// # Errors
///
/// [`Error::Encode`] when `value`'s `Serialize` implementation fails.
pub fn encode_value<T: Serialize + ?Sized>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value).map_err(|e| Error::encode(what, e))
}

/// Decodes MessagePack written by [`encode_value`] or by any producer following the protocol.
///
/// # Errors
///
/// [`Error::Decode`] when the bytes are not a valid encoding of `T`.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::decode(what, e))
}

/// Encodes a job as its sorted-set member.
///
/// # Errors
///
/// [`Error::Encode`] if the envelope cannot be encoded.
pub fn encode_member(job: &Job) -> Result<Vec<u8>> {
    let envelope = encode_value(job, "job envelope")?;
    let mut out = Vec::with_capacity(MEMBER_HEADER + envelope.len());
    out.extend_from_slice(priority_prefix(job.priority).as_bytes());
    out.extend_from_slice(job.id.as_str().as_bytes());
    out.extend_from_slice(&envelope);
    Ok(out)
}

/// The two-character prefix that orders members by priority.
pub fn priority_prefix(priority: u8) -> String {
    format!("{:02x}", 255 - priority)
}

/// Reads the id of a member without decoding the envelope.
///
/// # Errors
///
/// [`Error::Decode`] when the member is too short or the id is not ASCII.
pub fn member_id(member: &[u8]) -> Result<JobId> {
    let id = member.get(2..MEMBER_HEADER).ok_or_else(|| {
        Error::decode("job member", format!("{} bytes is too short", member.len()))
    })?;
    let id = std::str::from_utf8(id).map_err(|e| Error::decode("job id", e))?;
    Ok(JobId::from_wire(id.to_string()))
}

/// Decodes a member into a job of `queue`.
///
/// # Errors
///
/// [`Error::Decode`] when the member is malformed; the id is still readable with [`member_id`]
/// in most such cases, which is how the worker dead-letters a job it cannot decode. Two cases
/// have their own `what`: [`UNSUPPORTED_VERSION`] for an envelope of a later wire version
/// (its fields may mean what this reader cannot know), and `"priority prefix"` for a member
/// whose prefix disagrees with its envelope's priority (it was ordered by a priority the job
/// does not have: a producer bug).
pub fn decode_member(member: &[u8], queue: &str) -> Result<Job> {
    let id = member_id(member)?;
    let mut job: Job = decode_value(&member[MEMBER_HEADER..], "job envelope")?;
    if job.version > WIRE_VERSION {
        return Err(Error::decode(
            UNSUPPORTED_VERSION,
            format!(
                "the envelope is of wire version {}; this reader knows version {WIRE_VERSION} \
                 (upgrade it)",
                job.version
            ),
        ));
    }
    let prefix = priority_prefix(job.priority);
    if member.get(..2) != Some(prefix.as_bytes()) {
        return Err(Error::decode(
            "priority prefix",
            format!(
                "the member's prefix {:?} says another priority than the envelope's {} \
                 (prefix {prefix:?})",
                String::from_utf8_lossy(&member[..2.min(member.len())]),
                job.priority
            ),
        ));
    }
    job.id = id;
    job.queue = queue.to_string();
    Ok(job)
}

/// The `what` of the [`Error::Decode`] for an envelope of a later wire version.
pub const UNSUPPORTED_VERSION: &str = "wire version";

/// The final outcome of a job: what `wait_for` returns and what is kept for completed jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The job id.
    pub id: JobId,
    /// `completed`, `dead` or `discarded`.
    #[serde(rename = "s")]
    pub state: JobState,
    /// When the job finished, in milliseconds since the Unix epoch.
    #[serde(rename = "at")]
    pub finished_ms: i64,
    /// The handler's return value, MessagePack-encoded (completed jobs).
    #[serde(
        rename = "r",
        default,
        with = "serde_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Vec<u8>>,
    /// The reason (dead and discarded jobs).
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The job's member (priority prefix, id, envelope), when the retention policy keeps it.
    #[serde(
        rename = "j",
        default,
        with = "serde_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub job: Option<Vec<u8>>,
}

impl Outcome {
    /// Decodes the handler's return value.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if there is no result or it does not decode as `T`.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.result {
            Some(bytes) => decode_value(bytes, "job result"),
            None => Err(Error::decode(
                "job result",
                format!("job {} has no result ({})", self.id, self.state),
            )),
        }
    }

    /// Encodes the outcome for storage or publication.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (never in practice: every field is plain data).
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode_value(self, "job outcome")
    }

    /// Decodes an outcome read from Redis.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if the bytes are not an outcome.
    pub fn decode(bytes: &[u8]) -> Result<Outcome> {
        decode_value(bytes, "job outcome")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(priority: u8) -> Job {
        let args = encode_value(&serde_json_like(), "args").unwrap_or_default();
        let mut job = Job::new(
            JobId::generate(),
            "q",
            "bench.noop",
            args,
            1_700_000_000_000,
        );
        job.priority = priority;
        job
    }

    #[derive(Serialize)]
    struct Payload {
        i: u32,
        ts: f64,
        pad: String,
    }

    fn serde_json_like() -> Payload {
        Payload {
            i: 12345,
            ts: 1.7e12,
            pad: "x".repeat(64),
        }
    }

    #[test]
    fn member_round_trips_and_orders_by_priority_then_id() {
        let low = job(0);
        let high = job(9);
        let m_low = encode_member(&low).expect("encode");
        let m_high = encode_member(&high).expect("encode");
        assert!(m_high < m_low, "higher priority sorts first");
        let back = decode_member(&m_low, "q").expect("decode");
        assert_eq!(back, low);
        let later = job(0);
        assert!(
            encode_member(&later).expect("encode") > m_low,
            "FIFO within a priority"
        );
    }

    #[test]
    fn benchmark_member_is_compact() {
        // ~100-byte payload: the member must stay within jemalloc's 160-byte class.
        let m = encode_member(&job(0)).expect("encode");
        assert!(m.len() <= 156, "member is {} bytes", m.len());
    }

    #[test]
    fn malformed_member_is_an_error_not_a_panic() {
        assert!(decode_member(b"ff", "q").is_err());
        let mut m = encode_member(&job(0)).expect("encode");
        m.truncate(MEMBER_HEADER + 3);
        assert!(decode_member(&m, "q").is_err());
        assert!(member_id(&m).is_ok());
    }
}
