//! The network's root certificate, public part only: what every verifier (sidecar, CLI,
//! authority) holds. The trust domain is read from the root's own `spiffe://<domain>` URI
//! SAN, so a `ca-cert.pem` is all a node needs to know which network it is in.

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::error::{Error, Result};
use crate::identity::{Fingerprint, TrustDomain};

/// The root CA certificate as trusted by verifiers.
#[derive(Debug, Clone)]
pub struct RootCertificate {
    der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
    trust_domain: TrustDomain,
    subject_raw: Vec<u8>,
    not_after: UnixTime,
}

impl RootCertificate {
    /// Parses a PEM root certificate.
    pub fn from_pem(pem_text: &str) -> Result<Self> {
        Self::from_der(&pem_block(pem_text, "CERTIFICATE", "CA certificate")?)
    }

    /// Parses a DER root certificate and checks that it can act as this network's root:
    /// `CA:TRUE`, keyCertSign and cRLSign, and a `spiffe://<domain>` URI SAN.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| Error::Decode {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        if !rest.is_empty() {
            return Err(Error::Decode {
                what: "CA certificate",
                detail: "trailing bytes after the certificate".into(),
            });
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(Error::NotACa {
                reason: "basicConstraints CA:TRUE is missing",
            });
        }
        let usage = cert.key_usage().ok().flatten();
        if !usage.is_some_and(|ku| ku.value.key_cert_sign() && ku.value.crl_sign()) {
            return Err(Error::NotACa {
                reason: "keyUsage must include keyCertSign and cRLSign",
            });
        }
        check_root_key(&cert)?;
        let trust_domain = trust_domain_of(&cert)?;
        let not_after = unix_time(cert.validity().not_after.timestamp());
        let subject_raw = cert.tbs_certificate.subject.as_raw().to_vec();
        let der = CertificateDer::from(der.to_vec());
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| Error::Decode {
                what: "CA certificate",
                detail: format!("{e:?}"),
            })?
            .to_owned();
        Ok(Self {
            der,
            anchor,
            trust_domain,
            subject_raw,
            not_after,
        })
    }

    /// The DER bytes.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The PEM text (what `/trust/ca-certificate` serves).
    pub fn pem(&self) -> String {
        to_pem("CERTIFICATE", self.der.to_vec())
    }

    /// The trust domain this root speaks for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// SHA-256 fingerprint (for pinning the CA at enrolment).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.der)
    }

    /// The root's `notAfter`.
    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }

    pub(crate) fn anchor(&self) -> &TrustAnchor<'static> {
        &self.anchor
    }

    pub(crate) fn subject_raw(&self) -> &[u8] {
        &self.subject_raw
    }

    /// Re-parses the certificate (for the rare operations that need the full structure).
    pub(crate) fn with_parsed<T>(&self, f: impl FnOnce(&X509Certificate<'_>) -> T) -> Result<T> {
        let (_, cert) = X509Certificate::from_der(&self.der).map_err(|e| Error::Decode {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        Ok(f(&cert))
    }
}

/// The chain stage verifies RSA PKCS#1 signatures of 2048 to 8192 bits only, so a root with
/// any other key could never vouch for a node: refuse it when it is loaded, with a reason,
/// rather than at every handshake as an unknown issuer.
fn check_root_key(cert: &X509Certificate<'_>) -> Result<()> {
    use x509_parser::public_key::PublicKey;
    let spki = &cert.tbs_certificate.subject_pki;
    let bits = match spki.parsed() {
        Ok(PublicKey::RSA(rsa))
            if spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION =>
        {
            rsa.key_size()
        }
        _ => {
            return Err(Error::NotACa {
                reason: "the root key is not RSA; this network's roots are RSA (trust-proxy ca init makes RSA-4096)",
            });
        }
    };
    if !(crate::csr::MIN_RSA_BITS..=crate::csr::MAX_RSA_BITS).contains(&bits) {
        return Err(Error::NotACa {
            reason: "the root's RSA key is outside 2048-8192 bits",
        });
    }
    Ok(())
}

fn trust_domain_of(cert: &X509Certificate<'_>) -> Result<TrustDomain> {
    let san = cert.subject_alternative_name().ok().flatten();
    let uri = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .find_map(|n| match n {
            GeneralName::URI(u) => u.strip_prefix("spiffe://"),
            _ => None,
        })
        .ok_or(Error::NotACa {
            reason: "the root has no spiffe://<trust-domain> URI SAN; it was not made by trust-proxy ca init",
        })?;
    uri.trim_end_matches('/').parse()
}

/// Converts an ASN.1 timestamp (seconds, possibly before 1970) to `UnixTime`, clamping at 0.
pub(crate) fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.max(0).unsigned_abs()))
}

/// Encodes one PEM block with `\n` line endings (the pem crate defaults to `\r\n`).
pub(crate) fn to_pem(tag: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Decodes one PEM block with the expected tag.
pub(crate) fn pem_block(text: &str, tag: &str, what: &'static str) -> Result<Vec<u8>> {
    let block = pem::parse(text).map_err(|e| Error::Decode {
        what,
        detail: e.to_string(),
    })?;
    if block.tag() != tag {
        return Err(Error::Decode {
            what,
            detail: format!("expected a {tag} block, found {:?}", block.tag()),
        });
    }
    Ok(block.into_contents())
}
