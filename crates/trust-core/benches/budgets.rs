//! Per-operation latency percentiles against the budgets in docs/BENCHMARKS.md.
//! Criterion reports means of batches; budgets are per-operation p95s, so this harness
//! times every operation on its own and prints p50/p95/p99/max.
//!
//! `cargo bench -p trust-core --bench budgets` (set BUDGET_QUICK=1 for a short run).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;

use trust_core::signature::verify_request;
use trust_core::testing::{TestPki, at};
use trust_core::{
    CertificateAuthority, NodeKey, SignatureWindow, Subject, TrustDomain, VerifiedCsr,
};

fn measure(name: &str, budget: &str, n: usize, mut op: impl FnMut()) {
    for _ in 0..n.min(50) / 5 {
        op();
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            op();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "| {name} | {n} | {:.1?} | {:.1?} | {:.1?} | {:.1?} | {budget} |",
        pct(0.50),
        pct(0.95),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

fn main() {
    let quick = std::env::var_os("BUDGET_QUICK").is_some();
    let scale = |n: usize| if quick { (n / 10).max(5) } else { n };
    println!("| operation | n | p50 | p95 | p99 | max | budget |");
    println!("|---|---|---|---|---|---|---|");

    let f = common::Fixture::new();
    let (pki, node, crl, verifier, cache, identity, signer) = (
        &f.pki,
        &f.node,
        &f.crl,
        &f.verifier,
        &f.cache,
        &f.identity,
        &f.signer,
    );
    let (parts, received, local) = (f.parts(), f.received(), &f.local);

    measure(
        "RSA-2048 PSS sign (whole request: canonical string + sign + headers)",
        "p95 <= 250 us",
        scale(5000),
        || {
            black_box(signer.sign(&parts, at(0)).unwrap());
        },
    );
    measure(
        "signature verify, per message, no cache",
        "p95 <= 20 us",
        scale(20000),
        || {
            black_box(
                verify_request(
                    &received,
                    &parts,
                    identity,
                    local,
                    SignatureWindow::default(),
                    at(1),
                )
                .unwrap(),
            );
        },
    );
    measure(
        "certificate verification, uncached",
        "<= 100 us",
        scale(5000),
        || {
            black_box(verifier.verify(&node.cert.der, Some(crl), at(0)).unwrap());
        },
    );
    measure(
        "certificate verification, cached",
        "<= 1 us",
        scale(50000),
        || {
            black_box(cache.verify(&node.cert.der, at(0)).unwrap());
        },
    );
    let policy = TestPki::name_policy();
    let subject = Subject::Node("5".parse().unwrap());
    measure(
        "node certificate issue (keygen + CSR + CA checks + sign)",
        "p95 <= 200 ms",
        scale(100),
        || {
            let key = NodeKey::generate().unwrap();
            let csr = key
                .certificate_request("node", &["localhost".into()], &[])
                .unwrap();
            let csr = VerifiedCsr::from_pem(&csr, &policy).unwrap();
            black_box(pki.ca.issue(&csr, &subject, at(0)).unwrap());
        },
    );
    let csr_pem = NodeKey::generate()
        .unwrap()
        .certificate_request("node", &["localhost".into()], &[])
        .unwrap();
    measure(
        "CA side of issue only (CSR checks + sign)",
        "(part of the above)",
        scale(1000),
        || {
            let csr = VerifiedCsr::from_pem(&csr_pem, &policy).unwrap();
            black_box(pki.ca.issue(&csr, &subject, at(0)).unwrap());
        },
    );
    let domain: TrustDomain = "bench.local".parse().unwrap();
    measure(
        "CA creation with a new RSA-4096 root",
        "<= 2 s",
        scale(20),
        || {
            black_box(CertificateAuthority::create(&domain, "Bench Root", at(0)).unwrap());
        },
    );
}
