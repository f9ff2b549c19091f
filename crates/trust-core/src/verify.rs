//! Verifying a peer certificate, uncached: chain to the root and validity (webpki), then the
//! checks webpki leaves to us (EKU present, RSA >= 2048 bits, one SPIFFE identity in this
//! trust domain), then revocation against a CRL that must be present and current.
//!
//! Fail closed: no CRL, an expired CRL, or anything unreadable is a refusal.

use std::time::Duration;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PSS_2048_8192_SHA256};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION;
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;

use crate::crl::RevocationList;
use crate::csr::{MAX_RSA_BITS, MIN_RSA_BITS};
use crate::error::{CertificateRejection as Reject, Result};
use crate::identity::{Fingerprint, PeerIdentity, Serial, Subject};
use crate::root::{RootCertificate, unix_time};

/// Signature algorithms accepted on certificate chains: the root signs with RSA PKCS#1.
static CHAIN_ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
];

/// What a certificate is being verified for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A client presenting its certificate to our ingress (EKU clientAuth).
    ClientAuth,
    /// A server our egress connects to (EKU serverAuth).
    ServerAuth,
}

/// Verification settings.
#[derive(Debug, Clone, Copy)]
pub struct VerifySettings {
    /// Tolerated clock difference on `notBefore`/`notAfter`.
    pub clock_skew: Duration,
    /// What the certificate must be good for.
    pub usage: Usage,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(60),
            usage: Usage::ClientAuth,
        }
    }
}

/// Verifies peer certificates against one root. Stateless; see [`crate::TrustCache`] for
/// the cached, CRL-holding front.
#[derive(Debug, Clone)]
pub struct CertificateVerifier {
    root: RootCertificate,
    settings: VerifySettings,
}

impl CertificateVerifier {
    /// A verifier for `root`.
    pub fn new(root: RootCertificate, settings: VerifySettings) -> Self {
        Self { root, settings }
    }

    /// The root it trusts.
    pub fn root(&self) -> &RootCertificate {
        &self.root
    }

    /// The settings.
    pub fn settings(&self) -> &VerifySettings {
        &self.settings
    }

    /// Full verification of a DER certificate at `now`.
    pub fn verify(
        &self,
        der: &[u8],
        crl: Option<&RevocationList>,
        now: UnixTime,
    ) -> Result<PeerIdentity> {
        let crl = crl.ok_or(Reject::CrlMissing)?;
        if crl.is_expired(now) {
            return Err(Reject::CrlExpired {
                next_update: crl.next_update().as_secs(),
            }
            .into());
        }
        self.verify_chain(der, now)?;
        let identity = self.read_identity(der)?;
        if crl.is_revoked(&identity.serial) {
            return Err(Reject::Revoked {
                serial: identity.serial.to_string(),
            }
            .into());
        }
        Ok(identity)
    }

    /// Chain, validity, usage and identity, without a revocation check: for a node's own
    /// certificate at start-up (before any CRL is at hand) and for a freshly issued one.
    /// Never use it for a peer.
    pub fn verify_own(&self, der: &[u8], now: UnixTime) -> Result<PeerIdentity> {
        self.verify_chain(der, now)?;
        Ok(self.read_identity(der)?)
    }

    /// Chain, signature, validity (with skew), basic constraints and EKU, by webpki.
    fn verify_chain(&self, der: &[u8], now: UnixTime) -> Result<(), Reject> {
        verify_path(
            std::slice::from_ref(self.root.anchor()),
            &[],
            der,
            now,
            &self.settings,
        )
    }

    /// What webpki does not check, and the identity itself.
    fn read_identity(&self, der: &[u8]) -> Result<PeerIdentity, Reject> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| Reject::Malformed)?;
        let spki = &cert.tbs_certificate.subject_pki;
        if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
            return Err(Reject::WeakKey { bits: 0 });
        }
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err(Reject::Malformed),
        };
        if bits < MIN_RSA_BITS {
            return Err(Reject::WeakKey { bits });
        }
        if bits > MAX_RSA_BITS {
            return Err(Reject::Invalid(format!(
                "RSA key of {bits} bits is above 8192"
            )));
        }
        let eku = cert
            .extended_key_usage()
            .map_err(|_| Reject::Malformed)?
            .ok_or(Reject::WrongUsage)?;
        let eku_ok = match self.settings.usage {
            Usage::ClientAuth => eku.value.client_auth,
            Usage::ServerAuth => eku.value.server_auth,
        };
        if !eku_ok {
            return Err(Reject::WrongUsage);
        }
        if let Some(ku) = cert.key_usage().map_err(|_| Reject::Malformed)?
            && !ku.value.digital_signature()
        {
            return Err(Reject::WrongUsage);
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|_| Reject::Malformed)?;
        let mut uris = san
            .iter()
            .flat_map(|s| s.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            });
        let uri = uris
            .next()
            .ok_or_else(|| Reject::NoIdentity("no URI SAN".into()))?;
        if uris.next().is_some() {
            return Err(Reject::NoIdentity("more than one URI SAN".into()));
        }
        let subject =
            Subject::from_spiffe_id(uri, self.root.trust_domain()).map_err(Reject::NoIdentity)?;
        let public_key = ParsedPublicKey::new(
            &RSA_PSS_2048_8192_SHA256,
            spki.subject_public_key.data.as_ref(),
        )
        .map_err(|_| Reject::Malformed)?;
        Ok(PeerIdentity {
            spiffe_id: uri.to_owned(),
            roles: vec![subject.role()],
            subject,
            serial: Serial::from_bytes(cert.tbs_certificate.raw_serial()),
            fingerprint: Fingerprint::of_der(der),
            not_after: unix_time(cert.validity().not_after.timestamp()),
            public_key,
        })
    }
}

/// The names a certificate's subjectAltName holds, in the certificate's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<std::net::IpAddr>,
}

/// The DNS names and IP addresses of a certificate's subjectAltName (for listings such as
/// the authority's `/trust/nodes`, and for matching the name a client dialled; it checks
/// nothing else: verify the certificate first). Empty when it has none or cannot be
/// parsed.
pub fn certificate_names(der: &[u8]) -> CertificateNames {
    let mut names = CertificateNames::default();
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return names;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return names;
    };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => names.dns.push((*d).to_owned()),
            GeneralName::IPAddress(b) => {
                let ip = match b.len() {
                    4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                names.ips.extend(ip);
            }
            _ => {}
        }
    }
    names
}

/// The chain stage on its own: path validation from `leaf` to one of `anchors` through
/// `intermediates`, with this crate's signature algorithms (RSA PKCS#1 only), validity with
/// the configured skew, basic constraints and the EKU for `settings.usage`.
///
/// [`CertificateVerifier`] calls it with the network's one root and no intermediates (the
/// network's PKI has one level). It is public so that conformance suites (x509-limbo, in
/// `tests/core/limbo.rs`) can run their own anchors and intermediates through exactly the
/// path validation the verifier uses; it checks no revocation, key size or identity.
pub fn verify_path(
    anchors: &[rustls_pki_types::TrustAnchor<'_>],
    intermediates: &[CertificateDer<'_>],
    leaf: &[u8],
    now: UnixTime,
    settings: &VerifySettings,
) -> Result<(), Reject> {
    let cert_der = CertificateDer::from(leaf);
    let cert = EndEntityCert::try_from(&cert_der).map_err(|_| Reject::Malformed)?;
    let run = |time: UnixTime| {
        let usage = match settings.usage {
            Usage::ClientAuth => KeyUsage::client_auth(),
            Usage::ServerAuth => KeyUsage::server_auth(),
        };
        cert.verify_for_usage(
            CHAIN_ALGORITHMS,
            anchors,
            intermediates,
            time,
            usage,
            None,
            None,
        )
        .map(|_| ())
    };
    let skew = settings.clock_skew.as_secs();
    match run(now) {
        Ok(()) => Ok(()),
        // Within the skew, judge the rest of the chain at the edge of the window.
        Err(webpki::Error::CertExpired { not_after, .. })
            if now.as_secs().saturating_sub(not_after.as_secs()) <= skew =>
        {
            run(not_after).map_err(map_webpki)
        }
        Err(webpki::Error::CertNotValidYet { not_before, .. })
            if not_before.as_secs().saturating_sub(now.as_secs()) <= skew =>
        {
            run(not_before).map_err(map_webpki)
        }
        Err(e) => Err(map_webpki(e)),
    }
}

fn map_webpki(e: webpki::Error) -> Reject {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer
        | W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedSignatureAlgorithmContext(_) => Reject::UnknownIssuer,
        W::CertExpired { time, not_after } => Reject::Expired {
            not_after: not_after.as_secs(),
            now: time.as_secs(),
        },
        W::CertNotValidYet { time, not_before } => Reject::NotYetValid {
            not_before: not_before.as_secs(),
            now: time.as_secs(),
        },
        W::CaUsedAsEndEntity => Reject::CaAsLeaf,
        #[allow(deprecated, reason = "webpki 0.103 may still return the old variant")]
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => Reject::WrongUsage,
        W::BadDer | W::BadDerTime | W::TrailingData(_) => Reject::Malformed,
        other => Reject::Invalid(format!("{other:?}")),
    }
}
