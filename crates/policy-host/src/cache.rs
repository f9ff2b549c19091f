//! The compile cache on disk: compiled plugins kept in a folder so that a plugin compiled
//! once (when a container image is built) is not compiled again by each process that loads
//! it. wasmtime's own cache does the work (entries keyed by the plugin's bytes, the
//! engine's settings and the CPU's features; another CPU simply misses). This module only
//! decides whether a folder may be trusted with native code.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::error::{Error, Result};

/// The folder holds native code the process will run, as trusted as its binary: it must
/// exist, be a folder, and be writable by its owner only (group or others writing it could
/// plant code). Symlinks are followed, as the kernel would.
pub fn check_dir(dir: &Path) -> Result<()> {
    let bad = |detail: String| Error::CompileCache {
        path: dir.to_owned(),
        detail,
    };
    let meta = std::fs::metadata(dir).map_err(|e| bad(format!("{e}; create it first")))?;
    if !meta.is_dir() {
        return Err(bad("not a folder".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(bad(format!(
            "mode {mode:o}: group or others may write it, and it holds native code this \
             process runs; chmod go-w it"
        )));
    }
    Ok(())
}

/// wasmtime's cache over `dir`, after [`check_dir`].
pub fn open(dir: &Path) -> Result<wasmtime::Cache> {
    check_dir(dir)?;
    let mut config = wasmtime::CacheConfig::new();
    config.with_directory(dir);
    wasmtime::Cache::new(config).map_err(|e| Error::CompileCache {
        path: dir.to_owned(),
        detail: format!("{e:#}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    #[test]
    fn only_a_folder_its_owner_alone_may_write_is_trusted_with_native_code() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("a temp folder");
        };
        let path = dir.path();
        for (mode, trusted) in [(0o700, true), (0o755, true), (0o775, false), (0o757, false)] {
            std::fs::set_permissions(path, Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(check_dir(path).is_ok(), trusted, "mode {mode:o}");
        }
        let missing = check_dir(&path.join("none")).err().map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|m| m.contains("create it first")),
            "{missing:?}"
        );
    }
}
