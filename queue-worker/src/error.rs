use queue_core::ErrorKind;

/// Errors of the worker runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine failed (Redis unreachable, invalid queue name...).
    #[error(transparent)]
    Core(#[from] queue_core::Error),
    /// The worker's configuration is invalid.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// The handler registry is invalid (duplicate names, no handlers).
    #[error("invalid job registry: {0}")]
    Registry(String),
}

impl Error {
    /// What kind of failure this is: the engine's kind for an engine error (a Redis failure
    /// keeps the Redis error as its source), [`ErrorKind::Config`] or [`ErrorKind::Registry`]
    /// for the worker's own checks.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Core(e) => e.kind(),
            Error::Config(_) => ErrorKind::Config,
            Error::Registry(_) => ErrorKind::Registry,
        }
    }

    /// Whether retrying the same call can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Result alias of the worker crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
