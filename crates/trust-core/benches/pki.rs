//! Criterion benchmarks of the hot paths: RSA-PSS sign and verify, certificate checks
//! cached and uncached. `cargo bench -p trust-core --bench pki`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]
#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use trust_core::SignatureWindow;
use trust_core::signature::verify_request;
use trust_core::testing::at;

fn benches(c: &mut Criterion) {
    let f = common::Fixture::new();
    let (parts, received) = (f.parts(), f.received());
    c.bench_function("rsa2048_pss_sign_request", |b| {
        b.iter(|| f.signer.sign(black_box(&parts), at(0)).unwrap())
    });
    c.bench_function("signature_verify_request_uncached", |b| {
        b.iter(|| {
            verify_request(
                black_box(&received),
                &parts,
                &f.identity,
                &f.local,
                SignatureWindow::default(),
                at(1),
            )
            .unwrap()
        })
    });
    c.bench_function("certificate_verify_uncached", |b| {
        b.iter(|| {
            f.verifier
                .verify(black_box(&f.node.cert.der), Some(&f.crl), at(0))
                .unwrap()
        })
    });
    c.bench_function("certificate_verify_cached", |b| {
        b.iter(|| f.cache.verify(black_box(&f.node.cert.der), at(0)).unwrap())
    });
    c.bench_function("identity_still_trusted_per_request", |b| {
        b.iter(|| {
            f.cache
                .check_still_trusted(black_box(&f.identity), at(0))
                .unwrap()
        })
    });
}

criterion_group!(name = pki; config = Criterion::default().measurement_time(Duration::from_secs(3)); targets = benches);
criterion_main!(pki);
