//! A verified CRL: checked once when installed (issuer, signature by the root, number,
//! `nextUpdate`), then consulted per handshake and per request by serial lookup.
//!
//! Checking the signature once at install time, instead of on every path validation as
//! webpki would, keeps uncached certificate verification to one RSA verification.

use std::collections::HashSet;

use rustls_pki_types::UnixTime;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::{CrlRejection, Error, Result};
use crate::identity::Serial;
use crate::root::{RootCertificate, unix_time};

/// A CRL whose signature and issuer have been checked against the root.
#[derive(Debug, Clone)]
pub struct RevocationList {
    number: u64,
    this_update: UnixTime,
    next_update: UnixTime,
    revoked: HashSet<Serial>,
    der: Vec<u8>,
}

impl RevocationList {
    /// Parses a PEM CRL (`-----BEGIN X509 CRL-----`) and checks it against `root` at `now`.
    pub fn from_pem(pem_text: &str, root: &RootCertificate, now: UnixTime) -> Result<Self> {
        let der = crate::root::pem_block(pem_text, "X509 CRL", "CRL")
            .map_err(|e| CrlRejection::Malformed(e.to_string()))?;
        Self::from_der(&der, root, now)
    }

    /// Parses a DER CRL and checks: v2, issued by the root's subject, signed by the root key
    /// with RSA PKCS#1 SHA-256/384/512, has a CRL number and a `nextUpdate` not yet passed.
    pub fn from_der(der: &[u8], root: &RootCertificate, now: UnixTime) -> Result<Self> {
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| CrlRejection::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlRejection::Malformed("trailing bytes after the CRL".into()).into());
        }
        if crl.tbs_cert_list.issuer.as_raw() != root.subject_raw() {
            return Err(CrlRejection::WrongIssuer.into());
        }
        let alg = &crl.signature_algorithm.algorithm;
        if ![
            OID_PKCS1_SHA256WITHRSA,
            OID_PKCS1_SHA384WITHRSA,
            OID_PKCS1_SHA512WITHRSA,
        ]
        .contains(alg)
        {
            return Err(CrlRejection::BadSignature.into());
        }
        let signature_ok = root.with_parsed(|ca| {
            crl.verify_signature(&ca.tbs_certificate.subject_pki)
                .is_ok()
        })?;
        if !signature_ok {
            return Err(CrlRejection::BadSignature.into());
        }
        let next_update = crl
            .next_update()
            .map(|t| unix_time(t.timestamp()))
            .ok_or(CrlRejection::NoNextUpdate)?;
        let number = crl
            .crl_number()
            .ok_or(CrlRejection::NoNumber)?
            .to_u64_digits();
        let number = match number.as_slice() {
            [] => 0,
            [n] => *n,
            _ => return Err(CrlRejection::Malformed("CRL number above 2^64".into()).into()),
        };
        if now.as_secs() > next_update.as_secs() {
            return Err(Error::CrlRejected(CrlRejection::Expired {
                next_update: next_update.as_secs(),
            }));
        }
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| Serial::from_bytes(r.raw_serial()))
            .collect();
        Ok(Self {
            number,
            this_update: unix_time(crl.last_update().timestamp()),
            next_update,
            revoked,
            der: der.to_vec(),
        })
    }

    /// The CRL number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// `thisUpdate`.
    pub fn this_update(&self) -> UnixTime {
        self.this_update
    }

    /// `nextUpdate`: after it the CRL is not trusted.
    pub fn next_update(&self) -> UnixTime {
        self.next_update
    }

    /// Whether `now` is past `nextUpdate`.
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now.as_secs() > self.next_update.as_secs()
    }

    /// Whether `serial` is listed.
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.revoked.contains(serial)
    }

    /// How many serials are listed.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether no serial is listed.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// The serials listed.
    pub fn serials(&self) -> impl Iterator<Item = &Serial> {
        self.revoked.iter()
    }

    /// The DER bytes as received.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}
