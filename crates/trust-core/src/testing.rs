//! A generated test PKI, good and bad certificates and CRLs, for this crate's tests and for
//! the authority's, the sidecar's and the end-to-end tests (feature `testing`).
//!
//! Keys are real (RSA-4096 root, RSA-2048 leaves); generate one [`TestPki`] per test binary
//! and share it, since the root key takes about half a second.

#![allow(
    clippy::expect_used,
    reason = "test fixtures: a failure here is a broken test setup"
)]

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa};
use rustls_pki_types::UnixTime;

use crate::Result;
use crate::ca::{CertificateAuthority, IssuedCertificate, LEAF_VALIDITY, RevokedSerial};
use crate::crl::RevocationList;
use crate::csr::{NamePolicy, VerifiedCsr};
use crate::identity::{Serial, Subject, TrustDomain};
use crate::keys::NodeKey;

/// The trust domain test PKIs use.
pub const TEST_DOMAIN: &str = "test.sovereign";

/// A fixed "now" for tests: 2026-11-25T00:00:00Z.
pub const NOW: u64 = 1_795_564_800;

/// `UnixTime` for [`NOW`] plus `delta` seconds.
pub fn at(delta: i64) -> UnixTime {
    crate::unix_time(NOW.saturating_add_signed(delta))
}

/// A node's key and certificate.
#[derive(Debug)]
pub struct TestNode {
    /// The private key.
    pub key: NodeKey,
    /// The issued certificate.
    pub cert: IssuedCertificate,
    /// Who it is.
    pub subject: Subject,
}

/// A root CA with helpers for good and deliberately bad leaves and CRLs.
#[derive(Debug)]
pub struct TestPki {
    /// The CA.
    pub ca: CertificateAuthority,
}

impl TestPki {
    /// A new RSA-4096 root in [`TEST_DOMAIN`], created at [`NOW`].
    pub fn new() -> Self {
        Self::with_name("Test Root")
    }

    /// A root with a given common name (two roots with the same name test issuer confusion).
    pub fn with_name(common_name: &str) -> Self {
        let domain: TrustDomain = TEST_DOMAIN.parse().expect("valid test domain");
        Self {
            ca: CertificateAuthority::create(&domain, common_name, at(-86_400)).expect("root CA"),
        }
    }

    /// A fresh key and a good one-year certificate for node `id`, issued at [`NOW`].
    pub fn node(&self, id: u32) -> TestNode {
        let subject = Subject::Node(crate::NodeId::new(id).expect("node ids start at 1"));
        self.leaf(subject, |_| {})
    }

    /// A fresh key and a good certificate for admin `name`.
    pub fn admin(&self, name: &str) -> TestNode {
        self.leaf(
            Subject::Admin(name.parse().expect("valid admin name")),
            |_| {},
        )
    }

    /// A fresh key and a certificate for `subject` whose parameters `customise` may spoil.
    pub fn leaf(
        &self,
        subject: Subject,
        customise: impl FnOnce(&mut CertificateParams),
    ) -> TestNode {
        let key = NodeKey::generate().expect("RSA-2048 key");
        let cert = self
            .leaf_for_key(
                &key.public_key_spki_der().expect("SPKI"),
                &subject,
                customise,
            )
            .expect("test leaf");
        TestNode { key, cert, subject }
    }

    /// A certificate over any public key (SPKI DER), e.g. a 1024-bit or ECDSA key.
    pub fn leaf_for_key(
        &self,
        spki_der: &[u8],
        subject: &Subject,
        customise: impl FnOnce(&mut CertificateParams),
    ) -> Result<IssuedCertificate> {
        let csr = VerifiedCsr {
            spki_der: spki_der.to_vec(),
            key_bits: 2048,
            dns_names: vec!["localhost".into()],
            ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        };
        let mut params = self.ca.leaf_params(&csr, subject, at(0), LEAF_VALIDITY)?;
        customise(&mut params);
        self.ca.sign_leaf(&params, spki_der)
    }

    /// A CRL numbered `number` listing `revoked`, valid from [`NOW`] for `valid_for`.
    pub fn crl(&self, revoked: &[&Serial], number: u64, valid_for: Duration) -> RevocationList {
        let signed = self.signed_crl(revoked, number, at(0), valid_for);
        RevocationList::from_der(&signed.der, self.ca.root(), at(0)).expect("own CRL verifies")
    }

    /// The signed CRL bytes (for tests of CRL refusal).
    pub fn signed_crl(
        &self,
        revoked: &[&Serial],
        number: u64,
        this_update: UnixTime,
        valid_for: Duration,
    ) -> crate::SignedCrl {
        let entries: Vec<RevokedSerial> = revoked
            .iter()
            .map(|s| RevokedSerial {
                serial: (*s).clone(),
                revoked_at: this_update,
            })
            .collect();
        let next = crate::unix_time(this_update.as_secs() + valid_for.as_secs());
        self.ca
            .sign_crl(&entries, number, this_update, next)
            .expect("CRL signing")
    }

    /// The name policy test CSRs are checked against.
    pub fn name_policy() -> NamePolicy {
        NamePolicy::loopback()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Spoilers for [`TestPki::leaf`].
pub mod spoil {
    use super::*;

    /// Validity ended a day before [`NOW`].
    pub fn expired(p: &mut CertificateParams) {
        p.not_before = offset(-400 * 86_400);
        p.not_after = offset(-86_400);
    }

    /// Validity starts a day after [`NOW`].
    pub fn not_yet_valid(p: &mut CertificateParams) {
        p.not_before = offset(86_400);
        p.not_after = offset(400 * 86_400);
    }

    /// `CA:TRUE` on a leaf.
    pub fn ca_true(p: &mut CertificateParams) {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }

    /// EKU serverAuth only (no clientAuth).
    pub fn server_only(p: &mut CertificateParams) {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    }

    /// No EKU extension at all.
    pub fn no_eku(p: &mut CertificateParams) {
        p.extended_key_usages.clear();
    }

    /// No URI SAN (no identity).
    pub fn no_uri(p: &mut CertificateParams) {
        p.subject_alt_names
            .retain(|s| !matches!(s, rcgen::SanType::URI(_)));
    }

    fn offset(delta: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(NOW as i64 + delta).expect("in range")
    }
}
