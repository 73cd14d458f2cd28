//! The dashboard's one error type.

/// What can go wrong setting up or serving the dashboard (a page's own failure is an error
/// page, not one of these).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is wrong (a short token, a user name with `:`).
    #[error("dashboard configuration: {0}")]
    Config(String),
    /// The listener failed.
    #[error("the dashboard server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
