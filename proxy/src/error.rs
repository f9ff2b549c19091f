//! The binary's one error type, and the one place that maps it to an exit code (the
//! sidecar's own errors keep the code `sidecar::SidecarError::exit_code` gives them).
//!
//! Exit codes follow `sysexits.h`, so scripts can tell a refusal from a typo:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | a verification said no (`cert verify`, `message verify`) |
//! | 64 | bad arguments or configuration (the message names the flag or field) |
//! | 65 | an input file's content is unusable (not PEM, refused CSR, ...) |
//! | 66 | an input file is missing or unreadable |
//! | 69 | the trust authority could not be reached (the sidecar retried first) |
//! | 73 | an output file could not be created (e.g. it exists) |
//! | 74 | other I/O or state-directory failure (including a corrupt authority state) |
//! | 77 | the authority refused this node (bad bootstrap token, id taken, pin mismatch) |

use std::path::PathBuf;
use std::process::ExitCode;

/// What can go wrong in the proxy and its commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag or config value is wrong; the message names it.
    #[error("{0}")]
    Usage(String),
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
    /// A verification said no.
    #[error("refused: {0}")]
    Refused(String),
    /// The CA's state directory.
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
    /// The sidecar could not start or serve.
    #[error(transparent)]
    Sidecar(#[from] sidecar::SidecarError),
    /// The testnet could not start, or stopped early.
    #[error(transparent)]
    Testnet(#[from] testnet::TestnetError),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The exit code's number (`sysexits.h`), as logged.
    pub fn code(&self) -> u8 {
        match self {
            Self::Refused(_) => 1,
            Self::Usage(_) => 64,
            Self::BadInput { .. } | Self::Core(_) => 65,
            Self::NoInput { .. } => 66,
            Self::Unavailable(_) => 69,
            Self::NotPermitted(_) => 77,
            Self::CannotCreate { .. } => 73,
            Self::Store(e) => e.exit_code(),
            Self::Service(_) => 74,
            Self::Sidecar(e) => e.exit_code(),
            Self::Testnet(e) => e.exit_code(),
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
