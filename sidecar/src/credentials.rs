//! The node's own key and certificate: loaded or created at start-up, enrolled with the
//! authority when there is no valid certificate, renewed at a set fraction of their life,
//! and reloaded when an operator replaces the certificate file.
//!
//! The ingress reads the current pair through [`CredentialStore`] (a rustls server
//! certificate resolver), so a rotation swaps one pointer: connections already open keep
//! their session, new ones get the new certificate, nothing is dropped. The egress pairs
//! each signature with connections made with the same certificate ([`Credentials::generation`]),
//! because a peer binds every signature to the certificate of its connection.
//!
//! Files in the state directory:
//!
//! | file | what |
//! |---|---|
//! | `node-key.pem` | PKCS#8 RSA-2048 key, mode 0600; never leaves the node |
//! | `node-cert.pem` | the node certificate |
//! | `ca-cert.pem` | the root, checked against `authority.ca_fingerprint` when set |
//! | `crl.der` | the last good CRL, so a restart while the authority is down still serves |
//!
//! A renewal writes `node-key.pem.new` first, then replaces `node-cert.pem` (the commit
//! point), then renames the key. Start-up rolls a half-done renewal forward; one that did
//! not reach the commit point is asked again with the same key (the authority answers with
//! the certificate it may already have issued for it).

use std::fmt;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use trust_core::ca::BACKDATE;
use trust_core::{
    CertificateVerifier, MessageSigner, NodeKey, PeerIdentity, RootCertificate, UnixTime,
};

use crate::authority_client::AuthorityClient;
use crate::config::SidecarConfig;
use crate::error::{Result, SidecarError as Error};

/// The node key file.
pub const KEY_FILE: &str = "node-key.pem";
/// The node certificate file.
pub const CERT_FILE: &str = "node-cert.pem";
/// The root certificate file.
pub const CA_FILE: &str = "ca-cert.pem";
/// The last good CRL.
pub const CRL_FILE: &str = "crl.der";
const NEW_KEY_FILE: &str = "node-key.pem.new";

/// One key and the certificate issued for it.
pub struct Credentials {
    /// For rustls.
    pub certified: Arc<CertifiedKey>,
    /// For message signatures.
    pub signer: Arc<MessageSigner>,
    /// Who this node is, as its certificate says.
    pub identity: PeerIdentity,
    /// `notBefore`, unix seconds.
    pub not_before: u64,
    /// `notAfter`, unix seconds.
    pub not_after: u64,
    /// Which pair this is since start (0 first, +1 per renewal or reload). Connections
    /// made with one generation's certificate carry only that generation's signatures:
    /// a peer binds each signature to the certificate of the connection it arrives on.
    pub generation: u64,
}

impl Credentials {
    /// When this certificate is due for renewal; see [`renewal_time`].
    pub fn renew_after(&self, fraction: f64) -> u64 {
        renewal_time(self.not_before, self.not_after, fraction)
    }

    /// Builds the pair, checking the certificate chains to `root` and holds `key`'s
    /// public key.
    fn new(
        key: NodeKey,
        cert_der: Vec<u8>,
        verifier: &CertificateVerifier,
        now: UnixTime,
    ) -> Result<Self> {
        let identity = verifier.verify_own(&cert_der, now).map_err(Error::Core)?;
        let (not_before, spki) = {
            let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|e| Error::Service(format!("node certificate: {e}")))?;
            (
                cert.validity().not_before.timestamp().max(0) as u64,
                cert.public_key().raw.to_vec(),
            )
        };
        if spki != key.public_key_spki_der().map_err(Error::Core)? {
            return Err(Error::Service(
                "the node certificate is not for the node key".into(),
            ));
        }
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.pkcs8_der()))
            .map_err(|e| Error::Service(format!("node key: {e}")))?;
        let certified = Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(cert_der.clone())],
            signing,
        ));
        let signer = Arc::new(MessageSigner::new(key, &identity.subject, &cert_der));
        Ok(Self {
            certified,
            signer,
            not_before,
            not_after: identity.not_after.as_secs(),
            identity,
            generation: 0,
        })
    }
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal:
/// `fraction` of its life, counted from its issue. Our CA backdates `notBefore` by
/// [`BACKDATE`] for clock skew; counting from `notBefore` would make a short-lived
/// certificate due at once, and renew it on every check.
pub fn renewal_time(not_before: u64, not_after: u64, fraction: f64) -> u64 {
    let backdate = BACKDATE.as_secs();
    let issued = if not_before + backdate < not_after {
        not_before + backdate
    } else {
        not_before
    };
    let life = not_after.saturating_sub(issued) as f64;
    issued + (life * fraction) as u64
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.identity.spiffe_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The current credentials, swapped atomically; also the rustls resolver.
pub struct CredentialStore {
    dir: PathBuf,
    verifier: CertificateVerifier,
    current: ArcSwap<Credentials>,
    loaded_stamp: ArcSwap<Option<FileStamp>>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("dir", &self.dir)
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

/// What was loaded from `node-cert.pem`, to notice a replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

impl CredentialStore {
    /// The current pair.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// The root the node trusts.
    pub fn root(&self) -> &RootCertificate {
        self.verifier.root()
    }

    /// Start-up: state directory, root (pinned), key (0600), certificate (enrolling when
    /// there is no valid one).
    pub async fn open(config: &SidecarConfig, authority: &AuthorityClient) -> Result<Self> {
        let dir = config.state_dir.clone();
        create_private_dir(&dir)?;
        // What a crash left half-written (a key, a certificate, the saved CRL) goes first.
        trust_store::remove_interrupted_writes(&dir).map_err(Error::Store)?;
        let root = load_or_fetch_root(config, authority).await?;
        let verifier = CertificateVerifier::new(root, Default::default());
        let now = UnixTime::now();
        finish_half_done_renewal(&dir, &verifier, now);
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let cert_path = dir.join(CERT_FILE);
        let existing = match std::fs::read_to_string(&cert_path) {
            Ok(pem_text) => {
                match pem_der(&pem_text)
                    .and_then(|der| Credentials::new(clone_key(&key)?, der, &verifier, now))
                {
                    Ok(c) if c.not_after > now.as_secs() => Some(c),
                    Ok(_) => {
                        tracing::warn!(file = %cert_path.display(), "the node certificate has expired; enrolling again");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(file = %cert_path.display(), error = %e, "the node certificate is unusable; enrolling again");
                        None
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::NoInput {
                    path: cert_path,
                    source: e,
                });
            }
        };
        let credentials = match existing {
            Some(c) => c,
            None => {
                let token = config.bootstrap_token()?.ok_or_else(|| {
                    Error::Config(
                        "config `authority.bootstrap_token_file`: this node has no valid certificate and needs the bootstrap token to enroll"
                            .into(),
                    )
                })?;
                let csr = certificate_request(&key, config.node_id, &config.names)?;
                let answer = authority.enroll(&csr, &token, config.node_id).await?;
                let der = pem_der(&answer.certificate)?;
                let creds = Credentials::new(key, der, &verifier, now)?;
                write(&cert_path, answer.certificate.as_bytes(), 0o644)?;
                tracing::info!(node_id = %answer.node_id, spiffe_id = %answer.spiffe_id, "enrolled");
                creds
            }
        };
        if let Some(wanted) = config.node_id
            && credentials.identity.id_string() != wanted.to_string()
        {
            return Err(Error::NotPermitted(format!(
                "config `node_id` is {wanted} but this node's certificate is for {}; remove {} to enroll again",
                credentials.identity.spiffe_id,
                cert_path.display()
            )));
        }
        Ok(Self {
            loaded_stamp: ArcSwap::from_pointee(stamp(&cert_path)),
            dir,
            verifier,
            current: ArcSwap::from_pointee(credentials),
        })
    }

    /// Renews when due; reloads a replaced certificate file. Returns what happened.
    pub async fn tick(
        &self,
        authority: &AuthorityClient,
        renew_at: f64,
        names: &[String],
    ) -> Result<Tick> {
        let cert_path = self.dir.join(CERT_FILE);
        let now = UnixTime::now();
        let on_disk = stamp(&cert_path);
        if on_disk != **self.loaded_stamp.load() {
            let reloaded = std::fs::read_to_string(&cert_path)
                .map_err(Error::no_input(&cert_path))
                .and_then(|p| pem_der(&p))
                .and_then(|der| {
                    let key_path = self.dir.join(KEY_FILE);
                    let key_pem =
                        std::fs::read_to_string(&key_path).map_err(Error::no_input(&key_path))?;
                    let key =
                        NodeKey::from_pkcs8_pem(&key_pem).map_err(Error::bad_input(&key_path))?;
                    Credentials::new(key, der, &self.verifier, now)
                });
            self.loaded_stamp.store(Arc::new(on_disk));
            return match reloaded {
                Ok(c) => {
                    tracing::info!(
                        not_after = c.not_after,
                        "picked up a replaced node certificate"
                    );
                    self.swap(c);
                    Ok(Tick::Reloaded)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the replaced node certificate is unusable; keeping the one in use");
                    Err(e)
                }
            };
        }
        let current = self.current();
        if now.as_secs() < current.renew_after(renew_at) {
            return Ok(Tick::NotDue);
        }
        let key = self.renewal_key()?;
        let node = current.identity.id_string().parse().ok();
        let csr = certificate_request(&key, node, names)?;
        let answer = authority.renew(&current.signer, &csr).await?;
        let der = pem_der(&answer.certificate)?;
        let next_key_pem = key.to_pkcs8_pem();
        let creds = Credentials::new(key, der, &self.verifier, now)?;
        write(&self.dir.join(NEW_KEY_FILE), next_key_pem.as_bytes(), 0o600)?;
        trust_store::crash::point("sidecar::renewed-key-saved-certificate-not");
        write(&cert_path, answer.certificate.as_bytes(), 0o644)?;
        trust_store::crash::point("sidecar::renewed-certificate-saved-key-not-in-place");
        std::fs::rename(self.dir.join(NEW_KEY_FILE), self.dir.join(KEY_FILE))
            .map_err(|e| Error::Service(format!("renaming the renewed key into place: {e}")))?;
        self.loaded_stamp.store(Arc::new(stamp(&cert_path)));
        tracing::info!(serial = %creds.identity.serial, not_after = creds.not_after, "node certificate renewed");
        self.swap(creds);
        Ok(Tick::Renewed)
    }

    /// The key a renewal asks for: the one an interrupted renewal saved (the authority may
    /// have issued its certificate already, and answers the same request with it), else a
    /// new one.
    fn renewal_key(&self) -> Result<NodeKey> {
        match std::fs::read_to_string(self.dir.join(NEW_KEY_FILE)) {
            Ok(pem) => match NodeKey::from_pkcs8_pem(&pem) {
                Ok(key) => {
                    tracing::info!("renewing with the key of the renewal a crash interrupted");
                    return Ok(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the interrupted renewal's key is unusable; renewing with a new one");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::no_input(&self.dir.join(NEW_KEY_FILE))(e)),
        }
        NodeKey::generate().map_err(Error::Core)
    }

    fn swap(&self, mut next: Credentials) {
        next.generation = self.current.load().generation + 1;
        self.current.store(Arc::new(next));
    }

    /// A server-side resolver over this store.
    pub fn server_resolver(self: &Arc<Self>) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(Arc::clone(self)))
    }
}

/// What [`CredentialStore::tick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to do.
    NotDue,
    /// A new certificate was obtained from the authority.
    Renewed,
    /// The certificate file was replaced from outside and loaded.
    Reloaded,
}

struct Resolver(Arc<CredentialStore>);

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialResolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current.load().certified))
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::CannotCreate {
        path: dir.to_owned(),
        source,
    })?;
    Ok(())
}

async fn load_or_fetch_root(
    config: &SidecarConfig,
    authority: &AuthorityClient,
) -> Result<RootCertificate> {
    let path = config.state_dir.join(CA_FILE);
    let pin = config
        .authority
        .ca_fingerprint
        .as_deref()
        .and_then(crate::config::parse_fingerprint);
    let (pem_text, fetched) = match std::fs::read_to_string(&path) {
        Ok(text) => (text, false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (authority.ca_certificate().await?, true)
        }
        Err(e) => return Err(Error::NoInput { path, source: e }),
    };
    let root = RootCertificate::from_pem(&pem_text).map_err(Error::bad_input(&path))?;
    match pin {
        Some(pin) if root.fingerprint().0 != pin => {
            return Err(Error::NotPermitted(format!(
                "the CA certificate {} has fingerprint {}, not the pinned `authority.ca_fingerprint`; refusing to trust it",
                if fetched {
                    "the authority sent"
                } else {
                    "in ca-cert.pem"
                },
                hex::encode(root.fingerprint().0)
            )));
        }
        Some(_) => {}
        None if fetched => tracing::warn!(
            fingerprint = %hex::encode(root.fingerprint().0),
            "trusting the authority's CA certificate on first use; set `authority.ca_fingerprint` to pin it"
        ),
        None => {}
    }
    if fetched {
        write(&path, pem_text.as_bytes(), 0o644)?;
    }
    Ok(root)
}

fn load_or_create_key(path: &Path) -> Result<NodeKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(Error::no_input(path))?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::BadInput {
                    path: path.to_owned(),
                    detail: format!(
                        "mode {mode:o}: the node key must be private; chmod 600 {}",
                        path.display()
                    ),
                });
            }
            NodeKey::from_pkcs8_pem(&text).map_err(Error::bad_input(path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate().map_err(Error::Core)?;
            write(path, key.to_pkcs8_pem().as_bytes(), 0o600)?;
            tracing::info!(file = %path.display(), "created the node key");
            Ok(key)
        }
        Err(e) => Err(Error::NoInput {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// A crash during renewal leaves `node-key.pem.new`. If the certificate on disk is already
/// for it (the commit point passed), it becomes the node key. Otherwise it stays: the
/// authority may have recorded the renewal without the node receiving the answer (and
/// would then accept no renewal signed with the old key), so the next renewal asks again
/// with this key ([`CredentialStore::renewal_key`]) and gets that certificate.
fn finish_half_done_renewal(dir: &Path, verifier: &CertificateVerifier, now: UnixTime) {
    let new_key = dir.join(NEW_KEY_FILE);
    let Ok(text) = std::fs::read_to_string(&new_key) else {
        return;
    };
    let committed = NodeKey::from_pkcs8_pem(&text)
        .ok()
        .zip(
            std::fs::read_to_string(dir.join(CERT_FILE))
                .ok()
                .and_then(|p| pem_der(&p).ok()),
        )
        .is_some_and(|(key, der)| Credentials::new(key, der, verifier, now).is_ok());
    if !committed {
        tracing::warn!(
            committed,
            "a renewal was interrupted by a crash; the next renewal asks again with its key"
        );
        return;
    }
    let outcome = std::fs::rename(&new_key, dir.join(KEY_FILE));
    tracing::warn!(
        committed,
        ok = outcome.is_ok(),
        "finished a renewal interrupted by a crash"
    );
}

/// A CSR for `names` (DNS names and IP addresses mixed, as in the config).
fn certificate_request(key: &NodeKey, node_id: Option<u32>, names: &[String]) -> Result<String> {
    let (ips, dns): (Vec<_>, Vec<_>) = names
        .iter()
        .partition(|n| n.parse::<std::net::IpAddr>().is_ok());
    let ips: Vec<std::net::IpAddr> = ips.iter().filter_map(|n| n.parse().ok()).collect();
    let dns: Vec<String> = dns.into_iter().cloned().collect();
    let common_name = node_id.map_or_else(|| "node".to_owned(), |id| format!("node-{id}"));
    key.certificate_request(&common_name, &dns, &ips)
        .map_err(Error::Core)
}

fn clone_key(key: &NodeKey) -> Result<NodeKey> {
    NodeKey::from_pkcs8_der(key.pkcs8_der().secret_pkcs8_der()).map_err(Error::Core)
}

fn pem_der(text: &str) -> Result<Vec<u8>> {
    pem::parse(text)
        .map(pem::Pem::into_contents)
        .map_err(|e| Error::Service(format!("not a PEM certificate: {e}")))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    trust_store::write_atomic(path, bytes, mode).map_err(Error::Store)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn renewal_is_due_at_the_fraction_of_the_life_since_issue() {
        let year = 365 * 24 * 3600;
        let issued = 1_800_000_000;
        let backdate = BACKDATE.as_secs();
        // Our CA: backdated notBefore, so the life counts from the issue.
        assert_eq!(
            renewal_time(issued - backdate, issued + year, 2.0 / 3.0),
            issued + year * 2 / 3
        );
        assert_eq!(
            renewal_time(issued - backdate, issued + 15, 2.0 / 3.0),
            issued + 10
        );
        // A certificate from elsewhere, shorter than the backdate: from notBefore.
        assert_eq!(renewal_time(issued, issued + 90, 2.0 / 3.0), issued + 60);
    }

    #[test]
    fn a_node_key_is_created_private_and_a_readable_one_refuses_to_start() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let created = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "created {mode:o}");
        let loaded = load_or_create_key(&path).unwrap();
        assert_eq!(
            loaded.to_pkcs8_pem(),
            created.to_pkcs8_pem(),
            "the same key again"
        );

        for loose in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let error = load_or_create_key(&path).unwrap_err();
            let text = error.to_string();
            assert!(matches!(error, Error::BadInput { .. }), "{loose:o}: {text}");
            assert!(
                text.contains(&format!("{loose:o}")) && text.contains("chmod 600"),
                "{loose:o}: {text}"
            );
            assert!(!text.contains("PRIVATE KEY"), "{loose:o}: {text}");
        }
        // Fixing the mode as told is enough: the same key, not a new one.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_or_create_key(&path).unwrap().to_pkcs8_pem(),
            created.to_pkcs8_pem()
        );
    }
}
