//! [`SidecarError`]: what can stop the sidecar from starting or serving, and the exit code
//! (`sysexits.h`) each kind stands for, so the binary and scripts can tell a typo from an
//! unreachable authority. A refused *request* is not an error of this kind: it is a
//! [`crate::refusal::Refusal`], answered and counted, and the sidecar keeps serving.
//!
//! | code | meaning |
//! |---|---|
//! | 64 | bad configuration (the message names the field) |
//! | 65 | an input file's content is unusable (not PEM, refused CSR, ...) |
//! | 66 | an input file is missing or unreadable |
//! | 69 | the trust authority could not be reached (the sidecar retried first) |
//! | 73 | an output file could not be created |
//! | 74 | other I/O or state-directory failure |
//! | 77 | the authority refused this node (bad bootstrap token, id taken, pin mismatch) |

use std::path::PathBuf;

/// What can stop the sidecar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// A config value is wrong; the message names the field.
    #[error("{0}")]
    Config(String),
    /// An input file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    NoInput {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An input file's content is unusable.
    #[error("{}: {detail}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    CannotCreate {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file in the state directory (an atomic write, a lock).
    #[error(transparent)]
    Store(#[from] trust_store::Error),
    /// A long-running service failed (state, I/O); the message says where.
    #[error("{0}")]
    Service(String),
    /// The trust authority could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The trust authority (or a pinned fingerprint) refused this node.
    #[error("{0}")]
    NotPermitted(String),
    /// The PKI refused an operation on valid input.
    #[error(transparent)]
    Core(#[from] trust_core::Error),
}

/// Shorthand for results in this crate.
pub type Result<T, E = SidecarError> = std::result::Result<T, E>;

impl SidecarError {
    /// The process exit code (`sysexits.h`) for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 64,
            Self::BadInput { .. } | Self::Core(_) => 65,
            Self::NoInput { .. } => 66,
            Self::Unavailable(_) => 69,
            Self::NotPermitted(_) => 77,
            Self::CannotCreate { .. } => 73,
            Self::Store(e) => e.exit_code(),
            Self::Service(_) => 74,
        }
    }

    /// Wraps a read failure of `path`.
    pub fn no_input(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::NoInput { path, source }
    }

    /// Wraps bad content in `path`.
    pub fn bad_input(path: impl Into<PathBuf>) -> impl FnOnce(trust_core::Error) -> Self {
        let path = path.into();
        move |e| Self::BadInput {
            path,
            detail: e.to_string(),
        }
    }
}
