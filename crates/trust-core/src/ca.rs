//! The certificate authority: creates the RSA-4096 root, issues node and admin certificates
//! from verified CSRs, and signs CRLs. The CA never trusts what a CSR asks for beyond the
//! public key and the granted names: subject, SPIFFE id, validity and usages are its own.

use std::fmt;
use std::time::Duration;

use aws_lc_rs::rsa::KeySize;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

use crate::csr::VerifiedCsr;
use crate::error::{Error, Result};
use crate::identity::{Fingerprint, Serial, Subject, TrustDomain};
use crate::keys::NodeKey;
use crate::root::{RootCertificate, pem_block};

/// Ten years (365-day years), the root's lifetime.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// One year, a node or admin certificate's lifetime.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back `notBefore` is set, so a peer whose clock is a little behind accepts it.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A certificate the CA just issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// DER bytes.
    pub der: CertificateDer<'static>,
    /// PEM text.
    pub pem: String,
    /// Its (random, unique) serial.
    pub serial: Serial,
    /// SHA-256 of the DER.
    pub fingerprint: Fingerprint,
    /// `notAfter`.
    pub not_after: UnixTime,
}

/// One revoked certificate, as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// The serial.
    pub serial: Serial,
    /// When the CA processed the revocation.
    pub revoked_at: UnixTime,
}

/// A CRL the CA just signed.
#[derive(Debug, Clone)]
pub struct SignedCrl {
    /// DER bytes.
    pub der: Vec<u8>,
    /// PEM text (`-----BEGIN X509 CRL-----`).
    pub pem: String,
    /// The CRL number.
    pub number: u64,
}

/// The root CA: its certificate and private key. `Debug` never shows the key.
pub struct CertificateAuthority {
    root: RootCertificate,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Creates a new root: RSA-4096, self-signed, ten years, `CA:TRUE` (path length 0),
    /// keyCertSign + cRLSign, URI SAN `spiffe://<domain>`. Key generation takes ~0.5 s.
    pub fn create(trust_domain: &TrustDomain, common_name: &str, now: UnixTime) -> Result<Self> {
        let key = NodeKey::generate_with_size(KeySize::Rsa4096)?;
        let key_pair = rcgen_key(&key)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name, trust_domain);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = offset(now, -(BACKDATE.as_secs() as i64))?;
        params.not_after = offset(now, ROOT_VALIDITY.as_secs() as i64)?;
        params.serial_number = Some(random_serial()?);
        params.subject_alt_names = vec![SanType::URI(ia5(&format!("spiffe://{trust_domain}"))?)];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key_pair).map_err(|_| Error::Crypto {
            operation: "self-sign the root certificate",
        })?;
        Self::from_parts(cert.der(), key_pair)
    }

    /// Loads a root from its PEM certificate and PKCS#8 PEM key; refuses a pair that does
    /// not belong together or a certificate that cannot act as a root.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let der = pem_block(cert_pem, "CERTIFICATE", "CA certificate")?;
        let key = NodeKey::from_pkcs8_pem(key_pem).map_err(|_| Error::Decode {
            what: "CA private key",
            detail: "not an unencrypted PKCS#8 RSA key".into(),
        })?;
        Self::from_parts(&CertificateDer::from(der), rcgen_key(&key)?)
    }

    fn from_parts(der: &CertificateDer<'_>, key_pair: KeyPair) -> Result<Self> {
        let root = RootCertificate::from_der(der)?;
        let cert_key = root.with_parsed(|c| {
            c.tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .to_vec()
        })?;
        if cert_key != key_pair.public_key_raw() {
            return Err(Error::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(der, key_pair).map_err(|e| Error::Decode {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        Ok(Self { root, issuer })
    }

    /// The public root certificate.
    pub fn root(&self) -> &RootCertificate {
        &self.root
    }

    /// The CA private key as PKCS#8 PEM. Secret: persist with mode 0600, never serve.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a one-year certificate for `subject` from a verified CSR: SANs are the
    /// granted DNS names and IPs plus the subject's SPIFFE URI; EKU serverAuth + clientAuth.
    pub fn issue(
        &self,
        csr: &VerifiedCsr,
        subject: &Subject,
        now: UnixTime,
    ) -> Result<IssuedCertificate> {
        self.issue_with_validity(csr, subject, now, LEAF_VALIDITY)
    }

    /// [`issue`](Self::issue) with another lifetime (tests, short-lived admin certificates).
    pub fn issue_with_validity(
        &self,
        csr: &VerifiedCsr,
        subject: &Subject,
        now: UnixTime,
        validity: Duration,
    ) -> Result<IssuedCertificate> {
        let params = self.leaf_params(csr, subject, now, validity)?;
        self.sign_leaf(&params, &csr.spki_der)
    }

    /// The parameters of a leaf certificate: everything decided by the CA.
    pub(crate) fn leaf_params(
        &self,
        csr: &VerifiedCsr,
        subject: &Subject,
        now: UnixTime,
        validity: Duration,
    ) -> Result<CertificateParams> {
        let domain = self.root.trust_domain();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&subject.common_name(), domain);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = offset(now, -(BACKDATE.as_secs() as i64))?;
        params.not_after = offset(now, validity.as_secs() as i64)?;
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        for dns in &csr.dns_names {
            params.subject_alt_names.push(SanType::DnsName(ia5(dns)?));
        }
        params
            .subject_alt_names
            .extend(csr.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .subject_alt_names
            .push(SanType::URI(ia5(&subject.spiffe_id(domain))?));
        Ok(params)
    }

    /// Signs `params` over the public key `spki_der`.
    pub(crate) fn sign_leaf(
        &self,
        params: &CertificateParams,
        spki_der: &[u8],
    ) -> Result<IssuedCertificate> {
        let public_key =
            rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| Error::Decode {
                what: "CSR public key",
                detail: e.to_string(),
            })?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|_| Error::Crypto {
                operation: "sign the certificate",
            })?;
        let der = cert.der().clone();
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| Serial::from_bytes(s.as_ref()))
            .unwrap_or_else(|| Serial::from_bytes(&[]));
        Ok(IssuedCertificate {
            fingerprint: Fingerprint::of_der(&der),
            pem: cert.pem(),
            der,
            serial,
            not_after: crate::root::unix_time(params.not_after.unix_timestamp()),
        })
    }

    /// Signs a CRL listing `revoked`, valid from `this_update` to `next_update`.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedSerial],
        number: u64,
        this_update: UnixTime,
        next_update: UnixTime,
    ) -> Result<SignedCrl> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(r.serial.as_bytes()),
                    revocation_time: offset(r.revoked_at, 0)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: offset(this_update, 0)?,
            next_update: offset(next_update, 0)?,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(|_| Error::Crypto {
            operation: "sign the CRL (is nextUpdate after thisUpdate?)",
        })?;
        let der = crl.der().to_vec();
        Ok(SignedCrl {
            pem: crate::root::to_pem("X509 CRL", der.clone()),
            der,
            number,
        })
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", self.root.trust_domain())
            .field("fingerprint", &self.root.fingerprint())
            .finish_non_exhaustive()
    }
}

fn rcgen_key(key: &NodeKey) -> Result<KeyPair> {
    KeyPair::from_pkcs8_der_and_sign_algo(&key.pkcs8_der(), &rcgen::PKCS_RSA_SHA256).map_err(|_| {
        Error::Crypto {
            operation: "load the RSA key for certificate signing",
        }
    })
}

fn distinguished_name(common_name: &str, domain: &TrustDomain) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, domain.as_str());
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String> {
    s.try_into().map_err(|_| Error::InvalidName {
        what: "certificate name",
        value: s.chars().take(64).collect(),
        rule: "names in certificates are ASCII",
    })
}

/// 16 random bytes, top bit cleared so the INTEGER is positive, never zero.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Crypto {
        operation: "draw a random serial",
    })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn offset(t: UnixTime, delta_secs: i64) -> Result<OffsetDateTime> {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs.saturating_add(delta_secs)).map_err(|_| {
        Error::InvalidName {
            what: "time",
            value: secs.to_string(),
            rule: "times must fall between year -9999 and 9999",
        }
    })
}
