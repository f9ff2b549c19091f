//! The node side of enrolment: an RSA-2048 key made on the node (it never leaves), the CSR
//! that asks the authority for a certificate, and RSA-PSS message signing with that key.
//!
//! Every private-key operation runs in aws-lc-rs (constant-time, and fast enough for the
//! 250 us signing budget).

use std::fmt;
use std::net::IpAddr;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PSS_SHA256};
use rcgen::{CertificateParams, DistinguishedName, DnType, SanType};
use rustls_pki_types::PrivatePkcs8KeyDer;

use crate::error::{Error, Result};

/// A node's RSA private key. `Debug` never shows key material.
pub struct NodeKey {
    pair: RsaKeyPair,
    pkcs8: Vec<u8>,
}

impl NodeKey {
    /// Generates a fresh RSA-2048 key (about 50 ms).
    pub fn generate() -> Result<Self> {
        Self::generate_with_size(KeySize::Rsa2048)
    }

    pub(crate) fn generate_with_size(size: KeySize) -> Result<Self> {
        let pair = RsaKeyPair::generate(size).map_err(|_| Error::Crypto {
            operation: "generate an RSA key",
        })?;
        let pkcs8 = pair
            .as_der()
            .map_err(|_| Error::Crypto {
                operation: "encode the RSA key as PKCS#8",
            })?
            .as_ref()
            .to_vec();
        Ok(Self { pair, pkcs8 })
    }

    /// Loads a PKCS#8 key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<Self> {
        let block = pem::parse(pem_text).map_err(|e| Error::Decode {
            what: "private key PEM",
            detail: e.to_string(),
        })?;
        if block.tag() != "PRIVATE KEY" {
            return Err(Error::Decode {
                what: "private key PEM",
                detail: format!(
                    "found a {:?} block; convert it with `openssl pkcs8 -topk8 -nocrypt`",
                    block.tag()
                ),
            });
        }
        Self::from_pkcs8_der(block.contents())
    }

    /// Loads a PKCS#8 DER key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| Error::Decode {
            what: "RSA private key",
            detail: e.to_string(),
        })?;
        Ok(Self {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// The key as PKCS#8 PEM. Secret: write it with mode 0600.
    pub fn to_pkcs8_pem(&self) -> String {
        crate::root::to_pem("PRIVATE KEY", self.pkcs8.clone())
    }

    /// The key as PKCS#8 DER (what rustls loads). Secret.
    pub fn pkcs8_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.pkcs8.clone())
    }

    /// Size of the modulus in bytes (256 for RSA-2048), i.e. of every signature.
    pub fn signature_len(&self) -> usize {
        self.pair.public_modulus_len()
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER.
    pub fn public_key_der(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key as X.509 `SubjectPublicKeyInfo` DER.
    pub fn public_key_spki_der(&self) -> Result<Vec<u8>> {
        self.pair
            .public_key()
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| Error::Crypto {
                operation: "encode the public key",
            })
    }

    /// A PEM CSR asking for `common_name` with the given DNS and IP SANs. The authority
    /// decides the final names, SPIFFE id, validity and usages itself.
    pub fn certificate_request(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<String> {
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.pkcs8.as_slice()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|_| Error::Crypto {
            operation: "load the key for CSR signing",
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        for name in dns_names {
            let ia5 = name.as_str().try_into().map_err(|_| Error::InvalidName {
                what: "DNS name",
                value: name.chars().take(64).collect(),
                rule: "DNS names are ASCII",
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let csr = params.serialize_request(&key).map_err(|_| Error::Crypto {
            operation: "sign the CSR",
        })?;
        csr.pem().map_err(|_| Error::Crypto {
            operation: "encode the CSR as PEM",
        })
    }

    /// RSA-PSS / SHA-256 / MGF1-SHA-256 with a 32-byte salt over `message`.
    pub fn sign_pss(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PSS_SHA256, &SystemRandom::new(), message, &mut sig)
            .map_err(|_| Error::Crypto {
                operation: "sign the message",
            })?;
        Ok(sig)
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeKey(RSA-{}, <secret>)",
            self.pair.public_modulus_len() * 8
        )
    }
}
