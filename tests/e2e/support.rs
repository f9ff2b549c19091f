//! Helpers: run the binary and outside tools, find the venv, temp folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `trust-proxy` binary cargo built for this test run.
pub fn trust_proxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trust-proxy"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("proxy/ has a parent")
        .to_owned()
}

/// The venv's Python (made by scripts/test.sh), or `$TRUST_TEST_PYTHON`.
pub fn python() -> Command {
    let path = std::env::var_os("TRUST_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python3"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it creates the venv with tests/python/requirements.txt)",
        path.display()
    );
    Command::new(path)
}

/// Runs a command to completion and returns its output; panics if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Combined stdout and stderr of an output.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A CA made with the real binary in a temp folder, with helpers for issuing.
pub struct CliCa {
    /// Keeps the folder alive.
    pub tmp: tempfile::TempDir,
}

impl CliCa {
    /// `trust-proxy ca init` in a fresh temp folder.
    pub fn init() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        ok(trust_proxy()
            .args([
                "ca",
                "init",
                "--trust-domain",
                "interop.test",
                "--state-dir",
            ])
            .arg(tmp.path().join("ca")));
        Self { tmp }
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("ca")
    }

    /// A path inside the temp folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `ca-cert.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.state().join("ca-cert.pem")
    }

    /// `crl.pem`.
    pub fn crl(&self) -> PathBuf {
        self.state().join("crl.pem")
    }

    /// `ca issue-dev` for node `id`; returns (key, cert) paths.
    pub fn node(&self, id: u32) -> (PathBuf, PathBuf) {
        let out = self.path(&format!("node-{id}"));
        ok(trust_proxy()
            .args([
                "ca",
                "issue-dev",
                "--node-id",
                &id.to_string(),
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--state-dir",
            ])
            .arg(self.state())
            .arg("--out-dir")
            .arg(&out));
        (
            out.join(format!("node-{id}-key.pem")),
            out.join(format!("node-{id}-cert.pem")),
        )
    }

    /// `ca issue --node-id <id> --csr <csr>`, writing the certificate beside the CSR as
    /// `<stem>.pem`; returns the output (success or refusal).
    pub fn issue(&self, id: u32, csr: &Path) -> Output {
        run(trust_proxy()
            .args(["ca", "issue", "--node-id", &id.to_string(), "--csr"])
            .arg(csr)
            .arg("--out")
            .arg(csr.with_extension("pem"))
            .arg("--state-dir")
            .arg(self.state()))
    }
}
