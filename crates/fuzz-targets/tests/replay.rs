//! Replays every seed (`fuzz/corpus/<target>/`) and every crash the fuzzer found
//! (`fuzz/regressions/<target>/`) through the fuzz targets, on stable, in the normal test
//! run: a fixed bug stays fixed, and the seeds keep exercising the full parse.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_regression_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut seeds = 0;
    for (name, target) in fuzz_targets::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seed");
        seeds += corpus.len();
        for file in corpus
            .iter()
            .chain(&files(&fuzz.join("regressions").join(name)))
        {
            let bytes = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(
                outcome.is_ok(),
                "{name}: {} fails its target",
                file.display()
            );
        }
    }
    println!("replayed {seeds} seeds");
}

#[test]
fn the_fixtures_are_what_the_targets_expect() {
    // The good inputs must pass the full parse, or the targets would only ever see refusals.
    let pki_root = trust_core::RootCertificate::from_pem(fuzz_targets::fixture::ROOT_PEM).unwrap();
    let now = trust_core::unix_time(fuzz_targets::NOW);
    let crl = trust_core::RevocationList::from_der(fuzz_targets::fixture::CRL_DER, &pki_root, now)
        .unwrap();
    assert_eq!(crl.number(), 3);
    let verifier = trust_core::CertificateVerifier::new(pki_root, Default::default());
    let node = verifier
        .verify(fuzz_targets::fixture::NODE_DER, Some(&crl), now)
        .unwrap();
    assert_eq!(node.subject.id_string(), "7");
    // The fixture node passes the certificate target's invariant.
    fuzz_targets::certificate(fuzz_targets::fixture::NODE_DER);
}
