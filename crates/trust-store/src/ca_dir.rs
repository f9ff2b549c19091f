//! [`CaDirectory`]: the CA and its revocation log, loaded from and saved to one folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trust_core::{
    CertificateAuthority, RevokedSerial, Serial, SignedCrl, TrustDomain, UnixTime, unix_time,
};

use crate::error::{Error, Result};
use crate::files::{check_private, ensure_dir, read_optional, write_atomic};

const KEY_FILE: &str = "ca-key.pem";
const CERT_FILE: &str = "ca-cert.pem";
const REVOCATIONS_FILE: &str = "revocations.json";
const CRL_PEM_FILE: &str = "crl.pem";
const CRL_DER_FILE: &str = "crl.der";
const FORMAT_VERSION: u32 = 1;

/// One revoked certificate as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRecord {
    /// Serial, lower-case hex.
    pub serial: String,
    /// When it was revoked, unix seconds.
    pub revoked_at: u64,
    /// The node or admin it belonged to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationLog {
    version: u32,
    /// Number of the last CRL signed; the next one gets this plus one.
    crl_number: u64,
    revoked: Vec<RevocationRecord>,
}

/// The outcome of [`CaDirectory::revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Newly revoked; now on disk.
    Now,
    /// Was revoked before (revocation is idempotent).
    Already,
}

/// The CA's folder: key, certificate, revocation log, published CRL.
#[derive(Debug)]
pub struct CaDirectory {
    dir: PathBuf,
    ca: Arc<CertificateAuthority>,
    log: RevocationLog,
}

impl CaDirectory {
    /// Creates a new RSA-4096 root in `dir` (created 0700 if missing). Refuses if `dir`
    /// already holds a CA key: a network's root is never replaced by accident.
    pub fn init(
        dir: &Path,
        domain: &TrustDomain,
        common_name: &str,
        now: UnixTime,
    ) -> Result<Self> {
        ensure_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(Error::AlreadyInitialised { path: key_path });
        }
        let ca = CertificateAuthority::create(domain, common_name, now)?;
        Self::import(dir, ca)
    }

    /// Writes an existing CA (e.g. one the operator brings) into `dir` and opens it.
    pub fn import(dir: &Path, ca: CertificateAuthority) -> Result<Self> {
        ensure_dir(dir)?;
        let key_path = dir.join(KEY_FILE);
        if key_path.exists() {
            return Err(Error::AlreadyInitialised { path: key_path });
        }
        // Certificate and log first, key last: a crash in between leaves no key, so the
        // next start sees "not initialised" rather than a key without its certificate.
        write_atomic(&dir.join(CERT_FILE), ca.root().pem().as_bytes(), 0o644)?;
        let log = RevocationLog {
            version: FORMAT_VERSION,
            ..RevocationLog::default()
        };
        write_atomic(
            &dir.join(REVOCATIONS_FILE),
            &serde_json::to_vec_pretty(&log).map_err(|e| corrupt(dir.join(REVOCATIONS_FILE), e))?,
            0o644,
        )?;
        write_atomic(&key_path, ca.key_pem().as_bytes(), 0o600)?;
        Ok(Self {
            dir: dir.to_owned(),
            ca: Arc::new(ca),
            log,
        })
    }

    /// Opens the CA in `dir`: the key must be private (0600) and match the certificate; a
    /// corrupt log is a refusal, never an empty start.
    pub fn open(dir: &Path) -> Result<Self> {
        let key_path = dir.join(KEY_FILE);
        let Some(key_pem) = read_optional(&key_path)? else {
            return Err(Error::NotInitialised {
                path: dir.to_owned(),
            });
        };
        check_private(&key_path)?;
        let cert_path = dir.join(CERT_FILE);
        let cert_pem = read_optional(&cert_path)?.ok_or_else(|| Error::Corrupt {
            path: cert_path.clone(),
            detail: "missing while ca-key.pem exists".into(),
        })?;
        let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            trust_core::Error::CaKeyMismatch => Error::Core(e),
            // Name the file that is damaged: the key's decoding error is about ca-key.pem.
            trust_core::Error::Decode {
                what: "CA private key",
                ..
            } => Error::Corrupt {
                path: key_path.clone(),
                detail: e.to_string(),
            },
            other => Error::Corrupt {
                path: cert_path.clone(),
                detail: other.to_string(),
            },
        })?;
        let log_path = dir.join(REVOCATIONS_FILE);
        let log: RevocationLog = match read_optional(&log_path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt(log_path.clone(), e))?,
            None => {
                return Err(Error::Corrupt {
                    path: log_path,
                    detail: "missing while ca-key.pem exists".into(),
                });
            }
        };
        if log.version != FORMAT_VERSION {
            return Err(Error::Corrupt {
                path: log_path,
                detail: format!("format version {} is not {FORMAT_VERSION}", log.version),
            });
        }
        for record in &log.revoked {
            Serial::from_hex(&record.serial).map_err(|e| corrupt(log_path.clone(), e))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            ca: Arc::new(ca),
            log,
        })
    }

    /// Opens the CA in `dir`, creating it first if the folder holds none.
    pub fn open_or_init(
        dir: &Path,
        domain: &TrustDomain,
        common_name: &str,
        now: UnixTime,
    ) -> Result<(Self, bool)> {
        match Self::open(dir) {
            Ok(ca) => Ok((ca, false)),
            Err(Error::NotInitialised { .. }) => {
                Ok((Self::init(dir, domain, common_name, now)?, true))
            }
            Err(e) => Err(e),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The CA.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The CA, shareable (issuing needs no lock on the directory).
    pub fn shared_ca(&self) -> Arc<CertificateAuthority> {
        Arc::clone(&self.ca)
    }

    /// Where the root certificate is.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// Where the last published CRL (PEM) is.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL_PEM_FILE)
    }

    /// The revocation records.
    pub fn revocations(&self) -> &[RevocationRecord] {
        &self.log.revoked
    }

    /// Number of the last CRL signed (0 before the first).
    pub fn crl_number(&self) -> u64 {
        self.log.crl_number
    }

    /// Whether `serial` is revoked.
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        let hex = serial.to_string();
        self.log.revoked.iter().any(|r| r.serial == hex)
    }

    /// Revokes `serial`; on disk before this returns. Idempotent. Publish a CRL afterwards
    /// ([`publish_crl`](Self::publish_crl)) for verifiers to see it.
    pub fn revoke(
        &mut self,
        serial: &Serial,
        subject: Option<String>,
        now: UnixTime,
    ) -> Result<Revoked> {
        if self.is_revoked(serial) {
            return Ok(Revoked::Already);
        }
        let mut next = self.log.clone();
        next.revoked.push(RevocationRecord {
            serial: serial.to_string(),
            revoked_at: now.as_secs(),
            subject,
        });
        self.save_log(&next)?;
        self.log = next;
        Ok(Revoked::Now)
    }

    /// Signs a new CRL (number + 1, valid from `now` for `validity`), saves the number, then
    /// writes `crl.pem` and `crl.der`. Every CRL gets a new number, so a verifier can tell a
    /// refreshed CRL from the one it holds.
    pub fn publish_crl(&mut self, now: UnixTime, validity: Duration) -> Result<SignedCrl> {
        let mut next = self.log.clone();
        next.crl_number += 1;
        let revoked = next
            .revoked
            .iter()
            .map(|r| {
                Ok(RevokedSerial {
                    serial: Serial::from_hex(&r.serial)?,
                    revoked_at: unix_time(r.revoked_at),
                })
            })
            .collect::<Result<Vec<_>, trust_core::Error>>()?;
        let next_update = unix_time(now.as_secs().saturating_add(validity.as_secs()));
        let crl = self
            .ca
            .sign_crl(&revoked, next.crl_number, now, next_update)?;
        self.save_log(&next)?;
        self.log = next;
        write_atomic(&self.dir.join(CRL_DER_FILE), &crl.der, 0o644)?;
        write_atomic(&self.dir.join(CRL_PEM_FILE), crl.pem.as_bytes(), 0o644)?;
        Ok(crl)
    }

    fn save_log(&self, log: &RevocationLog) -> Result<()> {
        let path = self.dir.join(REVOCATIONS_FILE);
        let bytes = serde_json::to_vec_pretty(log).map_err(|e| corrupt(path.clone(), e))?;
        write_atomic(&path, &bytes, 0o644)
    }
}

fn corrupt(path: PathBuf, e: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::fs;
    use std::os::unix::fs::PermissionsExt as _;

    use trust_core::RevocationList;
    use trust_core::testing::{TEST_DOMAIN, TestPki, at};

    use super::*;

    fn domain() -> TrustDomain {
        TEST_DOMAIN.parse().unwrap()
    }

    #[test]
    fn init_writes_a_private_key_and_open_reads_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let made = CaDirectory::init(&dir, &domain(), "Root", at(0)).unwrap();
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let opened = CaDirectory::open(&dir).unwrap();
        assert_eq!(
            opened.ca().root().fingerprint(),
            made.ca().root().fingerprint()
        );
        assert!(matches!(
            CaDirectory::init(&dir, &domain(), "Root", at(0)),
            Err(Error::AlreadyInitialised { .. })
        ));
    }

    #[test]
    fn revocations_survive_reopening_and_reach_the_crl() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ca = CaDirectory::import(tmp.path(), TestPki::new().ca).unwrap();
        let serial = Serial::from_hex("3f01").unwrap();
        assert_eq!(
            ca.revoke(&serial, Some("7".into()), at(0)).unwrap(),
            Revoked::Now
        );
        assert_eq!(ca.revoke(&serial, None, at(1)).unwrap(), Revoked::Already);
        let first = ca.publish_crl(at(0), Duration::from_secs(3600)).unwrap();
        let second = ca.publish_crl(at(10), Duration::from_secs(3600)).unwrap();
        assert_eq!((first.number, second.number), (1, 2));

        let reopened = CaDirectory::open(tmp.path()).unwrap();
        assert!(reopened.is_revoked(&serial));
        assert_eq!(reopened.crl_number(), 2);
        let pem = fs::read_to_string(reopened.crl_path()).unwrap();
        let crl = RevocationList::from_pem(&pem, reopened.ca().root(), at(10)).unwrap();
        assert_eq!(crl.number(), 2);
        assert!(crl.is_revoked(&serial));
    }

    #[test]
    fn a_corrupt_or_missing_state_is_a_refusal_not_an_empty_start() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            CaDirectory::open(tmp.path()),
            Err(Error::NotInitialised { .. })
        ));
        CaDirectory::import(tmp.path(), TestPki::new().ca).unwrap();
        fs::write(tmp.path().join(REVOCATIONS_FILE), b"{\"version\":1,\"crl_n").unwrap();
        assert!(matches!(
            CaDirectory::open(tmp.path()),
            Err(Error::Corrupt { .. })
        ));
        fs::remove_file(tmp.path().join(REVOCATIONS_FILE)).unwrap();
        assert!(matches!(
            CaDirectory::open(tmp.path()),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn a_garbage_key_or_certificate_is_refused_naming_the_damaged_file() {
        for (damaged, other) in [(KEY_FILE, CERT_FILE), (CERT_FILE, KEY_FILE)] {
            let tmp = tempfile::tempdir().unwrap();
            CaDirectory::import(tmp.path(), TestPki::new().ca).unwrap();
            let path = tmp.path().join(damaged);
            fs::write(
                &path,
                b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
            )
            .unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            match CaDirectory::open(tmp.path()) {
                Err(Error::Corrupt { path: named, .. }) => {
                    assert_eq!(named, path, "the error names {damaged}, not {other}");
                }
                Err(e) => panic!("damaged {damaged}: expected Corrupt, got {e}"),
                Ok(_) => panic!("damaged {damaged}: opened anyway"),
            }
        }
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        CaDirectory::import(a.path(), TestPki::new().ca).unwrap();
        CaDirectory::import(b.path(), TestPki::new().ca).unwrap();
        fs::copy(b.path().join(CERT_FILE), a.path().join(CERT_FILE)).unwrap();
        let err = CaDirectory::open(a.path()).unwrap_err();
        assert!(
            matches!(err, Error::Core(trust_core::Error::CaKeyMismatch)),
            "{err}"
        );
    }

    #[test]
    fn a_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        CaDirectory::import(tmp.path(), TestPki::new().ca).unwrap();
        fs::set_permissions(tmp.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            CaDirectory::open(tmp.path()),
            Err(Error::InsecureKeyFile { .. })
        ));
    }
}
