//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong with the CA's files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists but its content is not what we wrote.
    #[error("{} is corrupt ({detail}); restore it from backup - refusing to start with a partial state", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `init` on a directory that already holds a CA.
    #[error("{} already holds a CA key; keep it, or move it away to create a new network", path.display())]
    AlreadyInitialised {
        /// The key file.
        path: PathBuf,
    },
    /// `open` on a directory without a CA.
    #[error("no CA in {} (ca-key.pem is missing); run `trust-proxy ca init --state-dir {}` first", path.display(), path.display())]
    NotInitialised {
        /// The directory.
        path: PathBuf,
    },
    /// The CA key is readable by others.
    #[error("{} has mode {mode:o}; the CA key must be private: chmod 600 {}", path.display(), path.display())]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file (the bootstrap token) that others can change.
    #[error("{} has mode {mode:o}: any user on this machine could change the bootstrap token; chmod o-w {}", path.display(), path.display())]
    InsecureSecretFile {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file (the bootstrap token) with nothing in it.
    #[error("{} is empty: put the bootstrap token in it (e.g. `openssl rand -hex 32`)", path.display())]
    EmptySecretFile {
        /// The secret file.
        path: PathBuf,
    },
    /// The PKI refused something.
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
}

impl Error {
    /// The process exit code (`sysexits.h`) a command failing with this error ends with:
    /// 66 missing input, 73 cannot create, 65 unusable content, 74 other I/O.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotInitialised { .. } => 66,
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 66,
            Self::AlreadyInitialised { .. } => 73,
            Self::Corrupt { .. }
            | Self::InsecureSecretFile { .. }
            | Self::EmptySecretFile { .. } => 65,
            _ => 74,
        }
    }
}
