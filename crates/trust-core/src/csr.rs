//! Reading a node's certificate request on the CA side: proof of possession (the CSR's own
//! signature), key type and size, and the names asked for, checked against [`NamePolicy`].
//!
//! Nothing in a CSR is copied into a certificate except the public key and the DNS/IP names
//! that pass the policy; the CA sets subject, SPIFFE id, validity and usages itself.

use std::net::IpAddr;

use ipnet::IpNet;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;

use crate::error::{CsrRejection, Error, Result};

/// Smallest RSA modulus accepted anywhere in the network.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bigger keys only cost the verifier time).
pub const MAX_RSA_BITS: usize = 8192;

/// Which DNS names and IP addresses the CA grants. DNS patterns are exact names or
/// `*.suffix` (any name under the suffix); IPs are CIDR ranges.
#[derive(Debug, Clone, Default)]
pub struct NamePolicy {
    /// Exact names or `*.suffix` patterns, lower-case.
    pub dns: Vec<String>,
    /// Allowed address ranges.
    pub ips: Vec<IpNet>,
}

impl NamePolicy {
    /// What a local testnet needs: `localhost`, `*.localhost`, loopback addresses.
    pub fn loopback() -> Self {
        Self {
            dns: vec!["localhost".into(), "*.localhost".into()],
            ips: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        }
    }

    /// Whether `name` (already validated and lower-cased) is granted.
    pub fn allows_dns(&self, name: &str) -> bool {
        self.dns
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => pattern == name,
            })
    }

    /// Whether `ip` is granted.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ips.iter().any(|net| net.contains(&ip))
    }
}

/// Checks DNS name syntax (RFC 1123 labels, ASCII, at most 253 characters) and lower-cases it.
pub fn normalise_dns_name(name: &str) -> Result<String> {
    let lower = name.to_ascii_lowercase();
    let labels_ok = lower.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if !lower.is_empty() && lower.len() <= 253 && labels_ok {
        Ok(lower)
    } else {
        Err(Error::InvalidName {
            what: "DNS name",
            value: name.chars().take(64).collect(),
            rule: "use dot-separated labels of a-z, 0-9 and '-', 253 characters at most",
        })
    }
}

/// A CSR that has passed every check: proof of possession, RSA 2048-8192, granted names.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The subject public key info DER (what the certificate will certify).
    pub spki_der: Vec<u8>,
    /// RSA modulus size.
    pub key_bits: usize,
    /// DNS names asked for and granted, lower-cased, de-duplicated.
    pub dns_names: Vec<String>,
    /// IP addresses asked for and granted, de-duplicated.
    pub ips: Vec<IpAddr>,
}

impl VerifiedCsr {
    /// Parses a PEM CSR (`-----BEGIN CERTIFICATE REQUEST-----`) and checks it.
    pub fn from_pem(pem_text: &str, policy: &NamePolicy) -> Result<Self> {
        let block =
            pem::parse(pem_text).map_err(|e| CsrRejection::Malformed(format!("PEM: {e}")))?;
        if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(CsrRejection::Malformed(format!(
                "expected a CERTIFICATE REQUEST block, found {:?}",
                block.tag()
            ))
            .into());
        }
        Self::from_der(block.contents(), policy)
    }

    /// Parses a DER CSR and checks it.
    pub fn from_der(der: &[u8], policy: &NamePolicy) -> Result<Self> {
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrRejection::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CsrRejection::Malformed("trailing bytes after the CSR".into()).into());
        }
        let alg = &csr.signature_algorithm.algorithm;
        if ![
            OID_PKCS1_SHA256WITHRSA,
            OID_PKCS1_SHA384WITHRSA,
            OID_PKCS1_SHA512WITHRSA,
        ]
        .contains(alg)
        {
            return Err(CsrRejection::UnsupportedSignatureAlgorithm(alg.to_id_string()).into());
        }
        let spki = &csr.certification_request_info.subject_pki;
        if spki.algorithm.algorithm != OID_PKCS1_RSAENCRYPTION {
            return Err(CsrRejection::UnsupportedKeyType(format!(
                "algorithm {}",
                spki.algorithm.algorithm.to_id_string()
            ))
            .into());
        }
        let (key_bits, exponent) = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => (rsa.key_size(), rsa.try_exponent().unwrap_or(0)),
            _ => return Err(CsrRejection::Malformed("unreadable RSA public key".into()).into()),
        };
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&key_bits) {
            return Err(CsrRejection::KeySize { bits: key_bits }.into());
        }
        if exponent != 65_537 {
            return Err(CsrRejection::WeakExponent { exponent }.into());
        }
        csr.verify_signature()
            .map_err(|_| CsrRejection::BadSignature)?;

        let mut dns_names = Vec::new();
        let mut ips = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            let ParsedExtension::SubjectAlternativeName(san) = ext else {
                continue;
            };
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => {
                        let dns = normalise_dns_name(dns)
                            .map_err(|_| CsrRejection::SanNotAllowed(format!("DNS {dns:?}")))?;
                        if !policy.allows_dns(&dns) {
                            return Err(CsrRejection::SanNotAllowed(format!("DNS {dns}")).into());
                        }
                        if !dns_names.contains(&dns) {
                            dns_names.push(dns);
                        }
                    }
                    GeneralName::IPAddress(bytes) => {
                        let ip = ip_from_bytes(bytes).ok_or_else(|| {
                            CsrRejection::SanNotAllowed("a malformed IP address".into())
                        })?;
                        if !policy.allows_ip(ip) {
                            return Err(CsrRejection::SanNotAllowed(format!("IP {ip}")).into());
                        }
                        if !ips.contains(&ip) {
                            ips.push(ip);
                        }
                    }
                    GeneralName::URI(uri) => {
                        return Err(CsrRejection::SanNotAllowed(format!(
                            "URI {:?} (the authority sets identity URIs itself)",
                            uri.chars().take(80).collect::<String>()
                        ))
                        .into());
                    }
                    other => {
                        return Err(CsrRejection::SanNotAllowed(format!(
                            "a {} name",
                            general_name_kind(other)
                        ))
                        .into());
                    }
                }
            }
        }
        Ok(Self {
            spki_der: spki.raw.to_vec(),
            key_bits,
            dns_names,
            ips,
        })
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn general_name_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::RFC822Name(_) => "e-mail",
        GeneralName::DirectoryName(_) => "directory",
        GeneralName::OtherName(..) => "otherName",
        GeneralName::RegisteredID(_) => "registeredID",
        GeneralName::X400Address(_) => "X.400",
        GeneralName::EDIPartyName(_) => "EDI party",
        _ => "unsupported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_patterns_match_only_below_the_suffix() {
        let p = NamePolicy {
            dns: vec!["*.nodes.local".into(), "authority".into()],
            ips: vec![],
        };
        assert!(p.allows_dns("a.nodes.local"));
        assert!(p.allows_dns("a.b.nodes.local"));
        assert!(p.allows_dns("authority"));
        assert!(!p.allows_dns("nodes.local"));
        assert!(!p.allows_dns(".nodes.local"));
        assert!(!p.allows_dns("evilnodes.local"));
        assert!(!p.allows_dns("authority.evil"));
    }

    #[test]
    fn loopback_policy_grants_only_loopback() {
        let p = NamePolicy::loopback();
        assert!(p.allows_ip("127.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(p.allows_ip(IpAddr::from([127, 9, 9, 9])));
        assert!(!p.allows_ip(IpAddr::from([10, 0, 0, 1])));
        assert!(p.allows_dns("localhost"));
        assert!(!p.allows_dns("example.com"));
    }

    #[test]
    fn dns_names_with_hostile_characters_are_refused() {
        assert_eq!(
            normalise_dns_name("Node-1.Local").ok().as_deref(),
            Some("node-1.local")
        );
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a-.b",
            "a b",
            "a\0b",
            "a/b",
            "ä.b",
            "*.b",
            &"a".repeat(64),
        ] {
            assert!(normalise_dns_name(bad).is_err(), "{bad:?}");
        }
    }
}
