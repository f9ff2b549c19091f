//! Message signatures: what a signer produces verifies, and every alteration is refused
//! with its own reason.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaPssSaltLength};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use trust_core::signature::{canonical_string, verify_request};
use trust_core::testing::{TestNode, at};
use trust_core::{
    CertificateVerifier, MessageSigner, NodeKey, PeerIdentity, ReceivedHeaders, RequestParts,
    SignatureHeaders, SignatureRejection as Reject, SignatureWindow, TrustCache, VerifySettings,
};

use crate::PKI;

const DEST: &str = "node-2.localhost:8443";
const BODY: &[u8] = br#"{"round":3,"weights":[0.1,0.2]}"#;

struct Party {
    node: TestNode,
    identity: Arc<PeerIdentity>,
}

fn party(id: u32) -> Party {
    let node = PKI.node(id);
    let cache = TrustCache::new(
        CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default()),
        Default::default(),
    );
    cache
        .install_crl(PKI.crl(&[], 1, Duration::from_secs(3600)))
        .unwrap();
    let identity = cache.verify(&node.cert.der, at(0)).unwrap();
    Party { node, identity }
}

static A: LazyLock<Party> = LazyLock::new(|| party(1));
static M: LazyLock<Party> = LazyLock::new(|| party(66));

fn signer(p: &Party) -> MessageSigner {
    let key = NodeKey::from_pkcs8_der(p.node.key.pkcs8_der().secret_pkcs8_der()).unwrap();
    MessageSigner::new(key, &p.node.subject, &p.node.cert.der)
}

fn parts(body: &[u8]) -> RequestParts<'_> {
    RequestParts::new("POST", DEST, "/fl/update?round=3", body)
}

fn received(h: &SignatureHeaders) -> ReceivedHeaders<'_> {
    ReceivedHeaders {
        from_node: Some(&h.from_node),
        timestamp: Some(&h.timestamp),
        nonce: Some(&h.nonce),
        node_auth: Some(&h.node_auth),
        signature: Some(&h.signature),
    }
}

fn check(
    h: &ReceivedHeaders<'_>,
    p: &RequestParts<'_>,
    peer: &PeerIdentity,
    now: i64,
) -> Result<(), Reject> {
    verify_request(
        h,
        p,
        peer,
        &[DEST.to_string()],
        SignatureWindow::default(),
        at(now),
    )
    .map(|_| ())
}

#[test]
fn a_signed_request_verifies_and_reports_its_facts() {
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    let facts = verify_request(
        &received(&h),
        &parts(BODY),
        &A.identity,
        &[DEST.into()],
        SignatureWindow::default(),
        at(2),
    )
    .unwrap();
    assert_eq!(facts.node, "1");
    assert_eq!(facts.timestamp, at(0).as_secs());
    assert_eq!(facts.nonce, h.nonce);
    assert_eq!(h.node_auth, A.node.cert.fingerprint.to_string());
    // Fresh nonces every time.
    let again = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    assert_ne!(again.nonce, h.nonce);
}

#[test]
fn the_destination_authority_is_case_insensitive() {
    let upper = RequestParts::new("post", "NODE-2.localhost:8443", "/fl/update?round=3", BODY);
    let h = signer(&A).sign(&upper, at(0)).unwrap();
    check(&received(&h), &parts(BODY), &A.identity, 0).unwrap();
}

#[test]
fn altered_body_method_or_path_breaks_the_signature() {
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    let r = received(&h);
    assert_eq!(
        check(
            &r,
            &parts(b"{\"round\":3,\"weights\":[9.9]}"),
            &A.identity,
            0
        ),
        Err(Reject::BadSignature)
    );
    let put = RequestParts {
        method: "PUT",
        ..parts(BODY)
    };
    assert_eq!(check(&r, &put, &A.identity, 0), Err(Reject::BadSignature));
    let path = RequestParts {
        path_and_query: "/fl/update?round=4",
        ..parts(BODY)
    };
    assert_eq!(check(&r, &path, &A.identity, 0), Err(Reject::BadSignature));
}

#[test]
fn a_request_replayed_to_another_destination_is_refused() {
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    // Delivered unchanged to node 3: its Host says node-2, which node 3 is not.
    let at_node3 = verify_request(
        &received(&h),
        &parts(BODY),
        &A.identity,
        &["node-3.localhost:8443".into()],
        SignatureWindow::default(),
        at(0),
    );
    assert_eq!(at_node3.map(|_| ()), Err(Reject::DestinationMismatch));
    // With the Host rewritten to node 3, the signature no longer matches.
    let rewritten = RequestParts {
        authority: "node-3.localhost:8443",
        ..parts(BODY)
    };
    let r = verify_request(
        &received(&h),
        &rewritten,
        &A.identity,
        &["node-3.localhost:8443".into()],
        SignatureWindow::default(),
        at(0),
    );
    assert_eq!(r.map(|_| ()), Err(Reject::BadSignature));
}

#[test]
fn stale_and_future_timestamps_are_refused_at_the_window_edges() {
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    let r = received(&h);
    check(&r, &parts(BODY), &A.identity, 300).unwrap();
    assert_eq!(
        check(&r, &parts(BODY), &A.identity, 301),
        Err(Reject::Stale { age: 301 })
    );
    check(&r, &parts(BODY), &A.identity, -30).unwrap();
    assert_eq!(
        check(&r, &parts(BODY), &A.identity, -31),
        Err(Reject::Future { ahead: 31 })
    );
}

#[test]
fn a_signature_carried_over_another_peers_connection_is_refused() {
    // A signed it; M relays it over M's own TLS connection.
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    assert_eq!(
        check(&received(&h), &parts(BODY), &M.identity, 0),
        Err(Reject::SignerNotPeer)
    );
    // M rewrites X-From-Node to itself: the fingerprint still names A's certificate.
    let mut forged = h.clone();
    forged.from_node = "66".into();
    assert_eq!(
        check(&received(&forged), &parts(BODY), &M.identity, 0),
        Err(Reject::FingerprintMismatch)
    );
    // M rewrites both: A's signature does not verify with M's key.
    forged.node_auth = M.node.cert.fingerprint.to_string();
    assert_eq!(
        check(&received(&forged), &parts(BODY), &M.identity, 0),
        Err(Reject::BadSignature)
    );
}

#[test]
fn the_fingerprint_of_another_certificate_is_refused() {
    let mut h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    h.node_auth = M.node.cert.fingerprint.to_string();
    assert_eq!(
        check(&received(&h), &parts(BODY), &A.identity, 0),
        Err(Reject::FingerprintMismatch)
    );
}

#[test]
fn a_maximum_salt_signature_gets_its_own_reason() {
    // What Python's cryptography does with padding.PSS.MAX_LENGTH.
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    let canonical = canonical_string(&parts(BODY), &h.from_node, &h.timestamp, &h.nonce).unwrap();
    let pair =
        aws_lc_rs::rsa::KeyPair::from_pkcs8(A.node.key.pkcs8_der().secret_pkcs8_der()).unwrap();
    static MAX_SALT: aws_lc_rs::signature::RsaSignatureEncoding =
        RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &MAX_SALT,
        &SystemRandom::new(),
        canonical.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let mut h2 = h.clone();
    h2.signature = STANDARD.encode(&sig);
    assert_eq!(
        check(&received(&h2), &parts(BODY), &A.identity, 0),
        Err(Reject::SaltLength)
    );
}

#[test]
fn a_signature_made_with_another_algorithm_is_refused() {
    // Same key, same canonical string, but PKCS#1 v1.5 or PSS over SHA-512: only
    // RSA-PSS/SHA-256 with a 32-byte salt is the network's scheme.
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    let canonical = canonical_string(&parts(BODY), &h.from_node, &h.timestamp, &h.nonce).unwrap();
    let pair =
        aws_lc_rs::rsa::KeyPair::from_pkcs8(A.node.key.pkcs8_der().secret_pkcs8_der()).unwrap();
    for encoding in [
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::signature::RSA_PSS_SHA512,
    ] {
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            encoding,
            &SystemRandom::new(),
            canonical.as_bytes(),
            &mut sig,
        )
        .unwrap();
        let mut other = h.clone();
        other.signature = STANDARD.encode(&sig);
        let refused = check(&received(&other), &parts(BODY), &A.identity, 0);
        assert!(
            matches!(refused, Err(Reject::BadSignature | Reject::SaltLength)),
            "{refused:?}"
        );
    }
}

#[test]
fn missing_and_malformed_headers_are_named() {
    let h = signer(&A).sign(&parts(BODY), at(0)).unwrap();
    let full = received(&h);
    let cases: Vec<(ReceivedHeaders<'_>, Reject)> = vec![
        (
            ReceivedHeaders {
                signature: None,
                ..full
            },
            Reject::MissingHeader("x-signature"),
        ),
        (
            ReceivedHeaders {
                from_node: None,
                ..full
            },
            Reject::MissingHeader("x-from-node"),
        ),
        (
            ReceivedHeaders {
                timestamp: Some("12a"),
                ..full
            },
            Reject::MalformedHeader("x-timestamp"),
        ),
        (
            ReceivedHeaders {
                timestamp: Some("2026-11-25T00:00:00Z"),
                ..full
            },
            Reject::MalformedHeader("x-timestamp"),
        ),
        (
            ReceivedHeaders {
                nonce: Some("short"),
                ..full
            },
            Reject::MalformedHeader("x-nonce"),
        ),
        (
            ReceivedHeaders {
                nonce: Some("AAAAAAAAAAAAAAAAAAAAA+=="),
                ..full
            },
            Reject::MalformedHeader("x-nonce"),
        ),
        (
            ReceivedHeaders {
                node_auth: Some("abc"),
                ..full
            },
            Reject::MalformedHeader("x-node-auth"),
        ),
        (
            ReceivedHeaders {
                signature: Some("@@@"),
                ..full
            },
            Reject::MalformedHeader("x-signature"),
        ),
        (
            ReceivedHeaders {
                signature: Some(&h.signature[..340]),
                ..full
            },
            Reject::MalformedHeader("x-signature"),
        ),
    ];
    for (headers, want) in cases {
        assert_eq!(
            check(&headers, &parts(BODY), &A.identity, 0),
            Err(want.clone()),
            "{want}"
        );
    }
    assert!(!ReceivedHeaders::default().any_present());
    assert!(full.any_present());
}

#[test]
fn the_canonical_string_matches_the_documented_form() {
    let p = RequestParts::new("post", "Node-2.localhost:8443", "/fl/update?round=3", b"");
    let s = canonical_string(&p, "1", "1795564800", "AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert_eq!(
        s,
        "tpm-sig-v1\nPOST\nnode-2.localhost:8443\n/fl/update?round=3\n1\n1795564800\nAAAAAAAAAAAAAAAAAAAAAA\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
    for (m, a, p) in [
        ("PO ST", "h", "/"),
        ("GET", "h\n", "/"),
        ("GET", "h", "/a\nb"),
        ("GET", "h", "rel"),
        ("GET", "u@h", "/"),
    ] {
        assert!(
            canonical_string(&RequestParts::new(m, a, p, b""), "1", "1", "n").is_err(),
            "{m:?} {a:?} {p:?}"
        );
    }
}
