//! The crate's one error type, and the one place that maps an error to an HTTP status and
//! to what the caller may see (internals are logged, never sent).

use std::path::PathBuf;

use http::StatusCode;

/// What can go wrong in the authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A state file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A state file is damaged: refuse to start rather than start empty.
    #[error("{} is corrupt ({detail}); restore it from backup - refusing to start with a partial registry", path.display())]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A setting is wrong; the message names it.
    #[error("configuration: {0}")]
    Config(String),
    /// The CA folder.
    #[error(transparent)]
    Store(#[from] trust_store::Error),
    /// The request is malformed (the message says how).
    #[error("{0}")]
    BadRequest(String),
    /// The bootstrap token is missing or wrong.
    #[error("bootstrap token missing or wrong")]
    Unauthorized,
    /// A request that must be signed with the node's current key (renewal, a CRL poll's
    /// announcement) is unsigned or its signature was refused.
    #[error(
        "this request must carry a message signature made with the node's current key \
         and certificate (X-From-Node, X-Node-Auth, X-Signature ...); it was missing or refused"
    )]
    NodeSignature,
    /// Refused by rule (e.g. a revoked identity re-enrolling).
    #[error("{0}")]
    Forbidden(String),
    /// No such node or route.
    #[error("{0}")]
    NotFound(String),
    /// The method is not allowed on the route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The id is taken by another key.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// Something failed inside the authority (a task, a response builder).
    #[error("internal: {0}")]
    Internal(String),
    /// The PKI refused or failed.
    #[error(transparent)]
    Core(#[from] trust_core::Error),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Whether the state disk is full (the write failed, nothing was acknowledged).
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            Self::Io { source, .. } | Self::Store(trust_store::Error::Io { source, .. }) => source,
            _ => return false,
        };
        source.kind() == std::io::ErrorKind::StorageFull
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        if self.is_disk_full() {
            return StatusCode::INSUFFICIENT_STORAGE;
        }
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Core(
                trust_core::Error::CsrRejected(_) | trust_core::Error::InvalidName { .. },
            ) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::NodeSignature => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the caller is told: the reason for a client error, nothing internal otherwise.
    pub fn public_reason(&self) -> String {
        if self.is_disk_full() {
            "the authority's state disk is full; nothing was recorded, retry once an operator \
             has freed space"
                .to_owned()
        } else if self.status().is_server_error() {
            "internal error; the authority's log has the details".to_owned()
        } else {
            self.to_string()
        }
    }

    /// Whose fault it was, for logs and metrics.
    pub fn blame(&self) -> &'static str {
        if self.status().is_server_error() {
            "authority"
        } else {
            "client"
        }
    }
}
