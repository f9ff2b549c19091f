//! Peer-certificate verification: the good path and every refusal.

use std::time::Duration;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData as _};
use rsa::pkcs8::EncodePublicKey as _;
use trust_core::testing::{TestPki, at, spoil};
use trust_core::{
    CertificateRejection as Reject, CertificateVerifier, Error, RevocationList, Role, Subject,
    Usage, VerifySettings,
};

use crate::PKI;

fn verifier() -> CertificateVerifier {
    CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default())
}

fn empty_crl() -> RevocationList {
    PKI.crl(&[], 1, Duration::from_secs(3600))
}

fn refusal(result: trust_core::Result<trust_core::PeerIdentity>) -> Reject {
    match result {
        Err(Error::CertificateRejected(r)) => r,
        Err(other) => panic!("expected a certificate refusal, got {other}"),
        Ok(id) => panic!("expected a refusal, got {id:?}"),
    }
}

#[test]
fn a_good_node_certificate_yields_its_identity() {
    let node = PKI.node(7);
    let id = verifier()
        .verify(&node.cert.der, Some(&empty_crl()), at(0))
        .unwrap();
    assert_eq!(id.subject, Subject::Node("7".parse().unwrap()));
    assert_eq!(id.spiffe_id, "spiffe://test.sovereign/node/7");
    assert_eq!(id.roles, vec![Role::Node]);
    assert_eq!(id.serial, node.cert.serial);
    assert_eq!(id.fingerprint, node.cert.fingerprint);
    assert_eq!(id.not_after, node.cert.not_after);
}

#[test]
fn an_admin_certificate_carries_the_admin_role() {
    let admin = PKI.admin("ops");
    let id = verifier()
        .verify(&admin.cert.der, Some(&empty_crl()), at(0))
        .unwrap();
    assert_eq!(id.spiffe_id, "spiffe://test.sovereign/admin/ops");
    assert!(id.has_role(Role::Admin));
    assert!(!id.has_role(Role::Node));
}

#[test]
fn expired_certificates_are_refused_beyond_the_skew_only() {
    let node = PKI.leaf(Subject::Node("2".parse().unwrap()), spoil::expired);
    let crl = PKI.crl(&[], 1, Duration::from_secs(3600));
    // expired a day ago: refused.
    assert!(matches!(
        refusal(verifier().verify(&node.cert.der, Some(&crl), at(0))),
        Reject::Expired { .. }
    ));
    // Judged 30 s after notAfter with a 60 s skew: accepted.
    let just_after = at(-86_400 + 30);
    let signed = PKI.signed_crl(&[], 1, at(-90_000), Duration::from_secs(200_000));
    let crl_then = RevocationList::from_der(&signed.der, PKI.ca.root(), just_after).unwrap();
    verifier()
        .verify(&node.cert.der, Some(&crl_then), just_after)
        .unwrap();
    // 61 s after: refused.
    let too_late = at(-86_400 + 61);
    assert!(matches!(
        refusal(verifier().verify(&node.cert.der, Some(&crl_then), too_late)),
        Reject::Expired { .. }
    ));
}

#[test]
fn not_yet_valid_certificates_are_refused() {
    let node = PKI.leaf(Subject::Node("3".parse().unwrap()), spoil::not_yet_valid);
    assert!(matches!(
        refusal(verifier().verify(&node.cert.der, Some(&empty_crl()), at(0))),
        Reject::NotYetValid { .. }
    ));
}

#[test]
fn another_root_with_the_same_name_is_not_ours() {
    let impostor = TestPki::with_name("Test Root");
    assert_eq!(
        impostor.ca.root().trust_domain(),
        PKI.ca.root().trust_domain(),
        "same name and domain: only the key differs"
    );
    let node = impostor.node(7);
    assert_eq!(
        refusal(verifier().verify(&node.cert.der, Some(&empty_crl()), at(0))),
        Reject::UnknownIssuer
    );
}

#[test]
fn a_leaf_with_ca_true_is_refused() {
    let node = PKI.leaf(Subject::Node("4".parse().unwrap()), spoil::ca_true);
    assert_eq!(
        refusal(verifier().verify(&node.cert.der, Some(&empty_crl()), at(0))),
        Reject::CaAsLeaf
    );
}

#[test]
fn the_root_itself_cannot_act_as_a_peer() {
    let root_der = PKI.ca.root().der().to_vec();
    assert!(
        verifier()
            .verify(&root_der, Some(&empty_crl()), at(0))
            .is_err()
    );
}

#[test]
fn wrong_or_missing_eku_is_refused() {
    let server_only = PKI.leaf(Subject::Node("5".parse().unwrap()), spoil::server_only);
    assert_eq!(
        refusal(verifier().verify(&server_only.cert.der, Some(&empty_crl()), at(0))),
        Reject::WrongUsage
    );
    // The same certificate is fine where serverAuth is what is asked.
    let as_server = CertificateVerifier::new(
        PKI.ca.root().clone(),
        VerifySettings {
            usage: Usage::ServerAuth,
            ..VerifySettings::default()
        },
    );
    as_server
        .verify(&server_only.cert.der, Some(&empty_crl()), at(0))
        .unwrap();
    let no_eku = PKI.leaf(Subject::Node("6".parse().unwrap()), spoil::no_eku);
    assert_eq!(
        refusal(verifier().verify(&no_eku.cert.der, Some(&empty_crl()), at(0))),
        Reject::WrongUsage
    );
}

#[test]
fn a_1024_bit_key_is_refused() {
    let mut rng = rand_core_os();
    let small = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
    let spki = small.to_public_key().to_public_key_der().unwrap();
    let subject = Subject::Node("8".parse().unwrap());
    let cert = PKI.leaf_for_key(spki.as_bytes(), &subject, |_| {}).unwrap();
    assert_eq!(
        refusal(verifier().verify(&cert.der, Some(&empty_crl()), at(0))),
        Reject::WeakKey { bits: 1024 }
    );
}

#[test]
fn a_non_rsa_key_is_refused() {
    let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let subject = Subject::Node("9".parse().unwrap());
    let cert = PKI
        .leaf_for_key(&ec.subject_public_key_info(), &subject, |_| {})
        .unwrap();
    assert_eq!(
        refusal(verifier().verify(&cert.der, Some(&empty_crl()), at(0))),
        Reject::WeakKey { bits: 0 }
    );
}

#[test]
fn a_key_usage_without_digital_signature_is_refused() {
    let node = PKI.leaf(Subject::Node("12".parse().unwrap()), |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
    });
    assert_eq!(
        refusal(verifier().verify(&node.cert.der, Some(&empty_crl()), at(0))),
        Reject::WrongUsage
    );
}

#[test]
fn hostile_spiffe_ids_in_a_certificate_are_refused() {
    // A certificate the root signed (a CA bug, or a forged request the CA let through)
    // whose URI SAN tries to read as another identity: never an identity.
    for uri in [
        "spiffe://test.sovereign/node/1/../admin/ops",
        "spiffe://test.sovereign/admin/ops%2f..",
        "spiffe://test.sovereign/node/1\n",
        "spiffe://test.sovereign/node/01",
        "spiffe://other.domain/node/1",
        "spiffe://test.sovereign/node/1?admin",
        "spiffe://test.sovereign//node/1",
    ] {
        let node = PKI.leaf(Subject::Node("13".parse().unwrap()), |p| {
            p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        });
        let refused = verifier().verify(&node.cert.der, Some(&empty_crl()), at(0));
        assert!(
            matches!(
                refused,
                Err(Error::CertificateRejected(Reject::NoIdentity(_)))
            ),
            "{uri:?}: {refused:?}"
        );
    }
}

#[test]
fn a_root_with_a_non_rsa_key_is_refused_when_loaded() {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://sovereign.local".try_into().unwrap(),
    )];
    let root = params.self_signed(&key).unwrap();
    match trust_core::RootCertificate::from_pem(&root.pem()) {
        Err(Error::NotACa { reason }) => assert!(reason.contains("not RSA"), "{reason}"),
        other => panic!("an EC root must be refused, got {other:?}"),
    }
}

#[test]
fn a_certificate_without_identity_is_refused() {
    let node = PKI.leaf(Subject::Node("10".parse().unwrap()), spoil::no_uri);
    assert!(matches!(
        refusal(verifier().verify(&node.cert.der, Some(&empty_crl()), at(0))),
        Reject::NoIdentity(_)
    ));
}

#[test]
fn a_tampered_certificate_signature_is_refused() {
    let node = PKI.node(11);
    let mut der = node.cert.der.to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    assert_eq!(
        refusal(verifier().verify(&der, Some(&empty_crl()), at(0))),
        Reject::UnknownIssuer
    );
    // A changed byte inside the signed part (here: in the SPIFFE id) is refused too.
    let mut der = node.cert.der.to_vec();
    let pos = der.windows(7).position(|w| w == b"node/11").unwrap();
    der[pos + 5] = b'9';
    assert_eq!(
        refusal(verifier().verify(&der, Some(&empty_crl()), at(0))),
        Reject::UnknownIssuer
    );
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for bytes in [&b""[..], b"\x30\x03\x02\x01", b"not a certificate at all"] {
        assert_eq!(
            refusal(verifier().verify(bytes, Some(&empty_crl()), at(0))),
            Reject::Malformed
        );
    }
}

#[test]
fn without_a_crl_verification_fails_closed() {
    let node = PKI.node(12);
    assert_eq!(
        refusal(verifier().verify(&node.cert.der, None, at(0))),
        Reject::CrlMissing
    );
}

#[test]
fn issued_certificates_have_the_contracted_shape() {
    use x509_parser::prelude::*;
    let node = PKI.node(13);
    let (_, cert) = X509Certificate::from_der(&node.cert.der).unwrap();
    assert_eq!(cert.subject().to_string(), "O=test.sovereign, CN=node-13");
    assert_eq!(
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
        365 * 86_400 + 300
    );
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert_eq!(cert.public_key().parsed().unwrap().key_size(), 2048);
    let (_, root) = X509Certificate::from_der(PKI.ca.root().der()).unwrap();
    assert_eq!(root.public_key().parsed().unwrap().key_size(), 4096);
    assert!(root.is_ca());
    let years = (root.validity().not_after.timestamp() - root.validity().not_before.timestamp())
        / (365 * 86_400);
    assert_eq!(years, 10);
    // Serials are random and distinct.
    assert_ne!(PKI.node(13).cert.serial, node.cert.serial);
}

fn rand_core_os() -> rsa::rand_core::OsRng {
    rsa::rand_core::OsRng
}

#[test]
fn a_certificates_dns_and_ip_names_are_listed_apart_and_its_uri_is_not() {
    let node = PKI.leaf(Subject::Node("4".parse().unwrap()), |p| {
        p.subject_alt_names.extend([
            rcgen::SanType::DnsName("node-4.example".try_into().unwrap()),
            rcgen::SanType::IpAddress("10.0.0.4".parse().unwrap()),
            rcgen::SanType::IpAddress("::1".parse().unwrap()),
        ]);
    });
    let names = trust_core::certificate_names(&node.cert.der);
    // The test PKI's own names (localhost, 127.0.0.1) come first.
    assert_eq!(names.dns, ["localhost", "node-4.example"]);
    assert_eq!(
        names.ips,
        ["127.0.0.1", "10.0.0.4", "::1"].map(|ip| ip.parse::<std::net::IpAddr>().unwrap())
    );
    assert_eq!(
        trust_core::certificate_names(b"not a certificate"),
        trust_core::CertificateNames::default()
    );
}
