//! # trust-core
//!
//! The trust layer's PKI and message signatures, in one place, with no network I/O and no
//! clock of its own: every decision takes the bytes, the settings and `now`, and returns a
//! verdict. The authority, the sidecar and the CLI all call into this crate; the fast paths
//! (cached certificate checks, RSA-PSS verification) live here.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`identity`] | trust domains, node ids, admin names, SPIFFE ids, roles, fingerprints, serials, [`PeerIdentity`] |
//! | [`keys`] | the node's RSA-2048 key, its CSR, RSA-PSS signing |
//! | [`csr`] | CA side of a CSR: proof of possession, key checks, granted names ([`NamePolicy`]) |
//! | [`ca`] | the root CA: create RSA-4096 root, issue node/admin certificates, sign CRLs |
//! | [`root`] | the public root certificate every verifier trusts |
//! | [`crl`] | a CRL verified against the root, consulted by serial |
//! | [`verify`] | uncached peer-certificate verification (webpki + our identity rules) |
//! | [`cache`] | [`TrustCache`]: verifier + current CRL + cached identities |
//! | [`signature`] | the canonical string, signing and verifying requests |
//! | [`error`] | [`Error`] and the refusal enums whose labels feed metrics |
//!
//! Persistence of the CA on disk lives in `trust-store`; HTTP lives in the proxy and the
//! authority.

pub mod ca;
pub mod cache;
pub mod crl;
pub mod csr;
pub mod error;
pub mod identity;
pub mod keys;
pub mod root;
pub mod signature;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verify;

pub use ca::{CertificateAuthority, IssuedCertificate, RevokedSerial, SignedCrl};
pub use cache::{CacheSettings, CacheStats, CrlUpdate, TrustCache};
pub use crl::RevocationList;
pub use csr::{NamePolicy, VerifiedCsr};
pub use error::{
    CertificateRejection, CrlRejection, CsrRejection, Error, Result, SignatureRejection,
};
pub use identity::{
    AdminName, Fingerprint, NodeId, PeerIdentity, Role, Serial, Subject, TrustDomain,
};
pub use keys::NodeKey;
pub use root::RootCertificate;
pub use rustls_pki_types::UnixTime;
pub use signature::{
    MessageSigner, ReceivedHeaders, RequestParts, SignatureHeaders, SignatureWindow,
    VerifiedSignature,
};
pub use verify::{
    CertificateNames, CertificateVerifier, Usage, VerifySettings, certificate_names, verify_path,
};

/// `UnixTime` from whole seconds (a convenience for callers and tests).
pub fn unix_time(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}
