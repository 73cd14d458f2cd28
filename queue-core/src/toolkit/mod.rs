//! The Redis toolkit for the applications that use the queue, apart from the engine: each
//! module builds on the engine's [`Client`](crate::Client) connection and key layout, and each
//! but `events` sits behind a cargo feature so a job-only build compiles none of it.

#[cfg(feature = "cache")]
pub(crate) mod cache;
// The event bus is always built: the engine's lifecycle log and the cache's invalidations
// ride on it, and it needs no dependency of its own.
pub(crate) mod events;
#[cfg(feature = "http")]
pub(crate) mod http;
#[cfg(feature = "rate-limit")]
pub(crate) mod rate_limit;
#[cfg(feature = "sessions")]
pub(crate) mod session;

/// The SHA-256 of `bytes` as lowercase hex: session ids are stored only as this, and cache
/// keys of SQL queries are named by it.
#[cfg(any(feature = "cache", feature = "sessions"))]
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
