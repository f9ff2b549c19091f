//! The CA side of enrolment: CSRs are checked before anything is issued.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use trust_core::testing::{TestPki, at};
use trust_core::{CsrRejection, Error, NamePolicy, NodeKey, Subject, VerifiedCsr};

use crate::PKI;

fn rejection(result: trust_core::Result<VerifiedCsr>) -> CsrRejection {
    match result {
        Err(Error::CsrRejected(r)) => r,
        Err(other) => panic!("expected a CSR refusal, got {other}"),
        Ok(csr) => panic!("expected a refusal, got {csr:?}"),
    }
}

#[test]
fn a_node_csr_is_issued_with_the_granted_names_and_its_spiffe_id() {
    let key = NodeKey::generate().unwrap();
    let pem = key
        .certificate_request(
            "anything",
            &["LocalHost".into()],
            &["127.0.0.2".parse().unwrap()],
        )
        .unwrap();
    let csr = VerifiedCsr::from_pem(&pem, &TestPki::name_policy()).unwrap();
    assert_eq!(csr.key_bits, 2048);
    assert_eq!(csr.dns_names, vec!["localhost".to_string()]);
    let issued = PKI
        .ca
        .issue(&csr, &Subject::Node("21".parse().unwrap()), at(0))
        .unwrap();
    let text = String::from_utf8_lossy(&issued.der).to_string();
    assert!(text.contains("spiffe://test.sovereign/node/21"));
    assert!(
        !text.contains("anything"),
        "the CSR's subject is not copied"
    );
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let key = NodeKey::generate().unwrap();
    let pem = key
        .certificate_request("node", &["localhost".into()], &[])
        .unwrap();
    let mut der = pem::parse(&pem).unwrap().into_contents();
    // Change a byte of the requested name: the signature no longer covers the content.
    let pos = der.windows(9).position(|w| w == b"localhost").unwrap();
    der[pos] = b'L';
    assert_eq!(
        rejection(VerifiedCsr::from_der(&der, &TestPki::name_policy())),
        CsrRejection::BadSignature
    );
    // And a flipped bit in the signature itself.
    let mut der = pem::parse(&pem).unwrap().into_contents();
    let last = der.len() - 1;
    der[last] ^= 0x80;
    assert_eq!(
        rejection(VerifiedCsr::from_der(&der, &TestPki::name_policy())),
        CsrRejection::BadSignature
    );
}

#[test]
fn a_csr_signed_by_another_key_is_refused() {
    // Graft key B's public key into a CSR signed by key A.
    let a = NodeKey::generate().unwrap();
    let b = NodeKey::generate().unwrap();
    let pem = a.certificate_request("node", &[], &[]).unwrap();
    let der = pem::parse(&pem).unwrap().into_contents();
    let a_pub = a.public_key_der().to_vec();
    let b_pub = b.public_key_der().to_vec();
    let pos = der
        .windows(a_pub.len())
        .position(|w| w == a_pub.as_slice())
        .unwrap();
    let mut grafted = der.clone();
    grafted[pos..pos + a_pub.len()].copy_from_slice(&b_pub);
    assert_eq!(
        rejection(VerifiedCsr::from_der(&grafted, &TestPki::name_policy())),
        CsrRejection::BadSignature
    );
}

#[test]
fn non_rsa_and_small_keys_are_refused() {
    let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = CertificateParams::default()
        .serialize_request(&ec)
        .unwrap()
        .pem()
        .unwrap();
    assert!(matches!(
        rejection(VerifiedCsr::from_pem(&pem, &TestPki::name_policy())),
        CsrRejection::UnsupportedSignatureAlgorithm(_)
    ));
    let small = include_str!("../fixtures/csr-rsa1024.pem");
    assert_eq!(
        rejection(VerifiedCsr::from_pem(small, &TestPki::name_policy())),
        CsrRejection::KeySize { bits: 1024 }
    );
}

#[test]
fn names_outside_the_policy_and_forged_identities_are_refused() {
    let key = NodeKey::generate().unwrap();
    let policy = TestPki::name_policy();
    let pem = key
        .certificate_request("n", &["evil.example".into()], &[])
        .unwrap();
    assert!(matches!(
        rejection(VerifiedCsr::from_pem(&pem, &policy)),
        CsrRejection::SanNotAllowed(s) if s.contains("evil.example")
    ));
    let pem = key
        .certificate_request("n", &[], &["10.0.0.1".parse().unwrap()])
        .unwrap();
    assert!(matches!(
        rejection(VerifiedCsr::from_pem(&pem, &policy)),
        CsrRejection::SanNotAllowed(s) if s.contains("10.0.0.1")
    ));
    // A CSR that asks for an admin SPIFFE id itself.
    let rc =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key.pkcs8_der(), &rcgen::PKCS_RSA_SHA256)
            .unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://test.sovereign/admin/root".try_into().unwrap(),
    )];
    let pem = params.serialize_request(&rc).unwrap().pem().unwrap();
    assert!(matches!(
        rejection(VerifiedCsr::from_pem(&pem, &policy)),
        CsrRejection::SanNotAllowed(s) if s.contains("URI")
    ));
    // With an empty policy even localhost is refused.
    let pem = key
        .certificate_request("n", &["localhost".into()], &[])
        .unwrap();
    assert!(VerifiedCsr::from_pem(&pem, &NamePolicy::default()).is_err());
}

#[test]
fn garbage_csrs_are_malformed() {
    let policy = TestPki::name_policy();
    for input in [
        "",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert!(matches!(
            rejection(VerifiedCsr::from_pem(input, &policy)),
            CsrRejection::Malformed(_)
        ));
    }
    let cert_pem = PKI.ca.root().pem();
    assert!(matches!(
        rejection(VerifiedCsr::from_pem(&cert_pem, &policy)),
        CsrRejection::Malformed(_)
    ));
}

/// A CSR over an RSA public key of `bits` bits that nobody holds the private half of: the
/// modulus is `0x80 00 .. 00`, the "signature" is filler. It lets a test send key sizes
/// that would take minutes to generate.
fn csr_over_a_made_up_rsa_key(bits: usize) -> String {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n <= 0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend(content);
        out
    }
    struct MadeUp {
        der: Vec<u8>,
        signature_len: usize,
    }
    impl rcgen::PublicKeyData for MadeUp {
        fn der_bytes(&self) -> &[u8] {
            &self.der
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }
    impl rcgen::SigningKey for MadeUp {
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            Ok(vec![0xa5; self.signature_len])
        }
    }
    let mut modulus = vec![0u8; 1 + bits / 8];
    modulus[1] = 0x80;
    let key = MadeUp {
        der: tlv(
            0x30,
            &[tlv(0x02, &modulus), tlv(0x02, &[0x01, 0x00, 0x01])].concat(),
        ),
        signature_len: bits / 8,
    };
    CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

#[test]
fn a_key_over_8192_bits_is_refused_by_its_size_before_its_signature_is_checked() {
    // Verifying a signature under a huge modulus costs the authority time an attacker can
    // spend for free; the size is checked first, so a made-up key is refused at once.
    let policy = TestPki::name_policy();
    for bits in [8200, 16384] {
        assert_eq!(
            rejection(VerifiedCsr::from_pem(
                &csr_over_a_made_up_rsa_key(bits),
                &policy
            )),
            CsrRejection::KeySize { bits },
            "{bits} bits"
        );
    }
    // At the limit the same made-up CSR passes the size check and fails where it must: its
    // signature (so the refusals above are the size's, not a malformed CSR's).
    assert_eq!(
        rejection(VerifiedCsr::from_pem(
            &csr_over_a_made_up_rsa_key(8192),
            &policy
        )),
        CsrRejection::BadSignature
    );
}
