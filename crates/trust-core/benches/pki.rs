//! Criterion benchmarks of the hot paths: RSA-PSS sign and verify, certificate checks
//! cached and uncached. `cargo bench -p trust-core --bench pki`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use trust_core::signature::verify_request;
use trust_core::testing::{TestPki, at};
use trust_core::{
    CacheSettings, CertificateVerifier, MessageSigner, NodeKey, ReceivedHeaders, RequestParts,
    SignatureWindow, TrustCache, VerifySettings,
};

fn benches(c: &mut Criterion) {
    let pki = TestPki::new();
    let node = pki.node(1);
    let crl = pki.crl(&[], 1, Duration::from_secs(3600));
    let verifier = CertificateVerifier::new(pki.ca.root().clone(), VerifySettings::default());
    let cache = TrustCache::new(verifier.clone(), CacheSettings::default());
    cache.install_crl(crl.clone()).unwrap();
    let identity = cache.verify(&node.cert.der, at(0)).unwrap();
    let key = NodeKey::from_pkcs8_der(node.key.pkcs8_der().secret_pkcs8_der()).unwrap();
    let signer = MessageSigner::new(key, &node.subject, &node.cert.der);
    let body = vec![7u8; 1024];
    let parts = RequestParts::new("POST", "node-2.localhost:8443", "/fl/update?round=3", &body);
    let headers = signer.sign(&parts, at(0)).unwrap();
    let received = ReceivedHeaders {
        from_node: Some(&headers.from_node),
        timestamp: Some(&headers.timestamp),
        nonce: Some(&headers.nonce),
        node_auth: Some(&headers.node_auth),
        signature: Some(&headers.signature),
    };
    let local = vec!["node-2.localhost:8443".to_string()];

    c.bench_function("rsa2048_pss_sign_request", |b| {
        b.iter(|| signer.sign(black_box(&parts), at(0)).unwrap())
    });
    c.bench_function("signature_verify_request_uncached", |b| {
        b.iter(|| {
            verify_request(
                black_box(&received),
                &parts,
                &identity,
                &local,
                SignatureWindow::default(),
                at(1),
            )
            .unwrap()
        })
    });
    c.bench_function("certificate_verify_uncached", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&node.cert.der), Some(&crl), at(0))
                .unwrap()
        })
    });
    c.bench_function("certificate_verify_cached", |b| {
        b.iter(|| cache.verify(black_box(&node.cert.der), at(0)).unwrap())
    });
    c.bench_function("identity_still_trusted_per_request", |b| {
        b.iter(|| {
            cache
                .check_still_trusted(black_box(&identity), at(0))
                .unwrap()
        })
    });
}

criterion_group!(name = pki; config = Criterion::default().measurement_time(Duration::from_secs(3)); targets = benches);
criterion_main!(pki);
