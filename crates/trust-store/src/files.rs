//! Crash-safe file replacement and permission checks.

use std::fs::{self, File, Permissions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::error::{Error, Result};

/// Replaces `path` with `bytes` so that a crash at any moment leaves either the old or the
/// new content: write a temp file in the same folder with `mode`, fsync it, rename it over
/// `path`, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(Error::io(dir))?;
    // Two writes so a crash test can stop the process with half the bytes written.
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    tmp.write_all(head).map_err(Error::io(tmp.path()))?;
    crate::crash::file_point("half-written", path);
    tmp.write_all(tail).map_err(Error::io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}

/// Removes the temp files [`write_atomic`] left in `dir` when the process died mid-write
/// (never read: the file they were to replace still holds its old content). Call at
/// start-up, before anything else writes in `dir`; returns how many were removed.
pub fn remove_interrupted_writes(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(dir)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(Error::io(dir))?;
        let is_temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.file_type().is_ok_and(|t| t.is_file());
        if is_temp {
            fs::remove_file(entry.path()).map_err(Error::io(&entry.path()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::warn!(dir = %dir.display(), removed, "removed files left half-written by a crash");
    }
    Ok(removed)
}

/// The name prefix of [`write_atomic`]'s temp files.
const TEMP_PREFIX: &str = ".tmp-";

/// Creates `dir` (and parents) if missing, mode 0700 for new folders.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(Error::io(dir))
}

/// Refuses a private-key file that group or others can read or write.
pub fn check_private(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .map_err(Error::io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// A secret read by [`read_secret`].
#[derive(Debug)]
pub struct SecretFile {
    /// The secret, surrounding whitespace removed.
    pub text: String,
    /// The file's permission bits when every user on the machine can read it (logged as
    /// a warning with [`EXPOSED_SECRET`]).
    pub readable_by_others: Option<u32>,
}

/// What to log when a secret file is readable by others.
pub const EXPOSED_SECRET: &str = "the bootstrap token file is readable by every user on this \
     machine, and whoever reads it can enroll nodes: chmod o-r it (Kubernetes: a secret \
     volume with defaultMode 0440; compose bind-mounts the host file with the host's mode, \
     so restrict it on the host)";

/// Reads a one-line secret file (the bootstrap token). Refused when it is empty or when
/// others can write it (they could set a token they know); readable by others is
/// logged as a warning, not refused, because compose cannot set a secret's mode (it bind-mounts the
/// host file) and group-readable is how Kubernetes mounts secrets for a non-root user.
pub fn read_secret(path: &Path) -> Result<SecretFile> {
    let text = fs::read_to_string(path).map_err(Error::io(path))?;
    let mode = fs::metadata(path)
        .map_err(Error::io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o002 != 0 {
        return Err(Error::InsecureSecretFile {
            path: path.to_owned(),
            mode,
        });
    }
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(Error::EmptySecretFile {
            path: path.to_owned(),
        });
    }
    if mode & 0o004 != 0 {
        tracing::warn!(file = %path.display(), mode = %format_args!("{mode:o}"), "{EXPOSED_SECRET}");
    }
    Ok(SecretFile {
        text,
        readable_by_others: (mode & 0o004 != 0).then_some(mode),
    })
}

/// Reads a file to a string, `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn a_secret_file_is_trimmed_refused_when_others_can_write_it_or_it_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "  s3cret-token\n").unwrap();
        for (mode, exposed) in [
            (0o600, None),
            (0o440, None),
            (0o640, None),
            (0o644, Some(0o644)),
        ] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            let secret = read_secret(&path).unwrap();
            assert_eq!(secret.text, "s3cret-token");
            assert_eq!(secret.readable_by_others, exposed, "mode {mode:o}");
        }
        for mode in [0o602, 0o666] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            let refused = read_secret(&path).unwrap_err();
            assert!(
                matches!(refused, Error::InsecureSecretFile { mode: m, .. } if m == mode),
                "{refused}"
            );
            assert!(refused.to_string().contains("chmod o-w"), "{refused}");
        }
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, " \n").unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(Error::EmptySecretFile { .. })
        ));
        let missing = read_secret(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
    }

    #[test]
    fn what_a_crash_left_half_written_is_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("crl.der"), b"whole", 0o644).unwrap();
        fs::write(dir.path().join(".tmp-AbC123"), b"hal").unwrap();
        fs::write(dir.path().join("tmp-not-ours"), b"x").unwrap();
        fs::create_dir(dir.path().join(".tmp-folder")).unwrap();
        assert_eq!(remove_interrupted_writes(dir.path()).unwrap(), 1);
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".tmp-folder", "crl.der", "tmp-not-ours"]);
        assert_eq!(fs::read(dir.path().join("crl.der")).unwrap(), b"whole");
        assert_eq!(
            remove_interrupted_writes(&dir.path().join("none")).unwrap(),
            0
        );
    }

    #[test]
    fn atomic_writes_replace_content_and_set_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        check_private(&path).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            check_private(&path),
            Err(Error::InsecureKeyFile { mode: 0o644, .. })
        ));
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
