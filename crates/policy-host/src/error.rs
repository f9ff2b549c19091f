//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong loading or running policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy-set or plugin file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The policy-set file is not valid; the message names the field.
    #[error("{}: {detail}", path.display())]
    Set {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A plugin could not be compiled, is not a `policy` component, or failed its probe.
    #[error("plugin {name} ({}): {detail}", path.display())]
    Plugin {
        /// The plugin's name in the set.
        name: String,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The compile cache folder cannot be used (missing, or writable by others).
    #[error("compile cache {}: {detail}", path.display())]
    CompileCache {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The wasmtime engine could not be set up.
    #[error("policy engine: {0}")]
    Engine(String),
    /// The folder watcher could not start.
    #[error("cannot watch {}: {detail}", path.display())]
    Watch {
        /// The folder.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
