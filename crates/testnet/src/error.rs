//! [`TestnetError`]: why the testnet could not start or stopped, with the exit code
//! (`sysexits.h`) each kind stands for.

use std::path::PathBuf;

/// Why the testnet could not start, or stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// A flag is wrong; the message names it.
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
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    CannotCreate {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// State kept from an earlier run cannot come back (a node of it was revoked); the
    /// message says how to start over.
    #[error("{0}")]
    StaleState(String),
    /// A process, port or state of the testnet failed; the message says which.
    #[error("{0}")]
    Service(String),
    /// Talking to the authority, or writing a sidecar's config, failed.
    #[error(transparent)]
    Sidecar(#[from] sidecar::SidecarError),
}

/// Shorthand for results in this crate.
pub type Result<T, E = TestnetError> = std::result::Result<T, E>;

impl TestnetError {
    /// The process exit code (`sysexits.h`) for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 64,
            Self::BadInput { .. } | Self::StaleState(_) => 65,
            Self::NoInput { .. } => 66,
            Self::CannotCreate { .. } => 73,
            Self::Service(_) => 74,
            Self::Sidecar(e) => e.exit_code(),
        }
    }

    /// Wraps a read failure of `path`.
    pub fn no_input(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::NoInput { path, source }
    }
}
