//! CRLs and the trust cache: revocation takes effect at once, stale or forged CRLs are
//! refused, and a cache hit is never trusted past what the current CRL says.

use std::sync::Arc;
use std::time::Duration;

use trust_core::testing::{TestPki, at};
use trust_core::{
    CacheSettings, CertificateRejection as Reject, CertificateVerifier, CrlRejection, CrlUpdate,
    Error, RevocationList, TrustCache, VerifySettings,
};

use crate::PKI;

const HOUR: Duration = Duration::from_secs(3600);

fn cache() -> TrustCache {
    TrustCache::new(
        CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default()),
        CacheSettings::default(),
    )
}

fn cert_refusal<T: std::fmt::Debug>(r: trust_core::Result<T>) -> Reject {
    match r {
        Err(Error::CertificateRejected(r)) => r,
        other => panic!("expected a certificate refusal, got {other:?}"),
    }
}

fn crl_refusal<T: std::fmt::Debug>(r: trust_core::Result<T>) -> CrlRejection {
    match r {
        Err(Error::CrlRejected(r)) => r,
        other => panic!("expected a CRL refusal, got {other:?}"),
    }
}

#[test]
fn a_revoked_serial_is_refused_and_others_are_not() {
    let (a, b) = (PKI.node(31), PKI.node(32));
    let crl = PKI.crl(&[&a.cert.serial], 2, HOUR);
    assert_eq!(crl.number(), 2);
    assert!(crl.is_revoked(&a.cert.serial));
    let v = CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default());
    assert!(matches!(
        cert_refusal(v.verify(&a.cert.der, Some(&crl), at(0))),
        Reject::Revoked { serial } if serial == a.cert.serial.to_string()
    ));
    v.verify(&b.cert.der, Some(&crl), at(0)).unwrap();
}

#[test]
fn a_crl_signed_by_another_key_with_the_same_name_is_refused() {
    let impostor = TestPki::with_name("Test Root");
    let signed = impostor.signed_crl(&[], 9, at(0), HOUR);
    assert_eq!(
        crl_refusal(RevocationList::from_der(&signed.der, PKI.ca.root(), at(0))),
        CrlRejection::BadSignature
    );
    let other_name = TestPki::with_name("Other Root");
    let signed = other_name.signed_crl(&[], 9, at(0), HOUR);
    assert_eq!(
        crl_refusal(RevocationList::from_der(&signed.der, PKI.ca.root(), at(0))),
        CrlRejection::WrongIssuer
    );
}

#[test]
fn an_expired_crl_is_not_trusted() {
    let signed = PKI.signed_crl(&[], 3, at(-2 * 3600), HOUR);
    assert!(matches!(
        crl_refusal(RevocationList::from_der(&signed.der, PKI.ca.root(), at(0))),
        CrlRejection::Expired { .. }
    ));
    // A CRL installed while fresh stops vouching for anyone once it expires.
    let c = cache();
    c.install_crl(PKI.crl(&[], 3, HOUR)).unwrap();
    let node = PKI.node(33);
    c.verify(&node.cert.der, at(0)).unwrap();
    assert!(matches!(
        cert_refusal(c.verify(&node.cert.der, at(3601))),
        Reject::CrlExpired { .. }
    ));
}

#[test]
fn a_tampered_or_garbage_crl_is_refused() {
    let signed = PKI.signed_crl(&[], 4, at(0), HOUR);
    let mut der = signed.der.clone();
    let last = der.len() - 1;
    der[last] ^= 1;
    assert_eq!(
        crl_refusal(RevocationList::from_der(&der, PKI.ca.root(), at(0))),
        CrlRejection::BadSignature
    );
    assert!(matches!(
        crl_refusal(RevocationList::from_der(b"garbage", PKI.ca.root(), at(0))),
        CrlRejection::Malformed(_)
    ));
    let reparsed = RevocationList::from_pem(&signed.pem, PKI.ca.root(), at(0)).unwrap();
    assert_eq!(reparsed.number(), 4);
}

#[test]
fn crl_rollback_is_refused() {
    let c = cache();
    assert_eq!(
        c.install_crl(PKI.crl(&[], 5, HOUR)).unwrap(),
        CrlUpdate::Installed { evicted: 0 }
    );
    assert_eq!(
        c.install_crl(PKI.crl(&[], 5, HOUR)).unwrap(),
        CrlUpdate::Unchanged
    );
    assert_eq!(
        crl_refusal(c.install_crl(PKI.crl(&[], 4, HOUR))),
        CrlRejection::Rollback {
            installed: 5,
            offered: 4
        }
    );
    assert_eq!(c.crl().unwrap().number(), 5);
}

#[test]
fn the_cache_counts_hits_and_misses_and_returns_the_same_identity() {
    let c = cache();
    c.install_crl(PKI.crl(&[], 1, HOUR)).unwrap();
    let node = PKI.node(34);
    let first = c.verify(&node.cert.der, at(0)).unwrap();
    let second = c.verify(&node.cert.der, at(1)).unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "second lookup is served from the cache"
    );
    let stats = c.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
}

#[test]
fn the_cache_holds_at_most_its_capacity_and_still_verifies_beyond_it() {
    let c = TrustCache::new(
        CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default()),
        CacheSettings {
            capacity: 3,
            ..CacheSettings::default()
        },
    );
    c.install_crl(PKI.crl(&[], 1, HOUR)).unwrap();
    let nodes: Vec<_> = (40..48).map(|id| PKI.node(id)).collect();
    for node in &nodes {
        c.verify(&node.cert.der, at(0)).unwrap();
    }
    let stats = c.stats();
    assert!(
        stats.entries <= 3,
        "{} entries in a cache of 3",
        stats.entries
    );
    assert_eq!(stats.misses, 8);
    // An evicted peer is verified again, not refused.
    for node in &nodes {
        c.verify(&node.cert.der, at(1)).unwrap();
    }
    assert!(c.stats().entries <= 3);
}

#[test]
fn a_new_crl_evicts_and_refuses_cached_revoked_peers_at_once() {
    let c = cache();
    c.install_crl(PKI.crl(&[], 1, HOUR)).unwrap();
    let (a, b) = (PKI.node(35), PKI.node(36));
    let a_id = c.verify(&a.cert.der, at(0)).unwrap();
    c.verify(&b.cert.der, at(0)).unwrap();
    assert_eq!(
        c.install_crl(PKI.crl(&[&a.cert.serial], 2, HOUR)).unwrap(),
        CrlUpdate::Installed { evicted: 1 }
    );
    // An open connection re-checks its identity on every request.
    assert!(matches!(
        cert_refusal(c.check_still_trusted(&a_id, at(1))),
        Reject::Revoked { .. }
    ));
    assert!(matches!(
        cert_refusal(c.verify(&a.cert.der, at(1))),
        Reject::Revoked { .. }
    ));
    c.verify(&b.cert.der, at(1)).unwrap();
}

#[test]
fn entries_expire_after_the_ttl_by_the_callers_clock() {
    let c = TrustCache::new(
        CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default()),
        CacheSettings {
            ttl: Duration::from_secs(60),
            capacity: 10,
        },
    );
    c.install_crl(PKI.crl(&[], 1, HOUR)).unwrap();
    let node = PKI.node(37);
    c.verify(&node.cert.der, at(0)).unwrap();
    c.verify(&node.cert.der, at(59)).unwrap();
    c.verify(&node.cert.der, at(61)).unwrap();
    let stats = c.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
}

#[test]
fn a_cache_without_a_crl_refuses_everyone() {
    let c = cache();
    let node = PKI.node(38);
    assert_eq!(
        cert_refusal(c.verify(&node.cert.der, at(0))),
        Reject::CrlMissing
    );
}
