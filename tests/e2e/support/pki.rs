//! A CA made with the real binary (`trust-proxy ca init`) in a temp folder, with helpers
//! for issuing node certificates from it.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::process::{ok, run, trust_proxy};

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
