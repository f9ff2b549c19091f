//! trust-core's behaviour tests: one binary, modules named by what they check. Every
//! refusal the issue lists has a test here that fails if the check is removed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::LazyLock;

use trust_core::testing::TestPki;

mod certificates;
mod csr_requests;
mod limbo;
mod properties;
mod revocation;
mod signatures;

/// One root for the whole binary (RSA-4096 generation takes ~0.5 s).
static PKI: LazyLock<TestPki> = LazyLock::new(TestPki::new);

/// A verified identity for tests that need any peer.
pub fn signatures_peer() -> std::sync::Arc<trust_core::PeerIdentity> {
    static PEER: LazyLock<std::sync::Arc<trust_core::PeerIdentity>> = LazyLock::new(|| {
        let node = PKI.node(99);
        let v = trust_core::CertificateVerifier::new(PKI.ca.root().clone(), Default::default());
        let crl = PKI.crl(&[], 1, std::time::Duration::from_secs(3600));
        std::sync::Arc::new(
            v.verify(&node.cert.der, Some(&crl), trust_core::testing::at(0))
                .unwrap(),
        )
    });
    PEER.clone()
}
