//! The set-up both benchmarks share: a root, one node, a CRL, a warm cache, a signed request.
#![allow(
    missing_docs,
    dead_code,
    reason = "shared benchmark set-up; each bench uses part of it"
)]

use std::sync::Arc;
use std::time::Duration;

use trust_core::testing::{TestNode, TestPki, at};
use trust_core::{
    CacheSettings, CertificateVerifier, MessageSigner, NodeKey, PeerIdentity, ReceivedHeaders,
    RequestParts, RevocationList, SignatureHeaders, TrustCache, VerifySettings,
};

pub const DESTINATION: &str = "node-2.localhost:8443";

pub struct Fixture {
    pub pki: TestPki,
    pub node: TestNode,
    pub crl: RevocationList,
    pub verifier: CertificateVerifier,
    pub cache: TrustCache,
    pub identity: Arc<PeerIdentity>,
    pub signer: MessageSigner,
    pub body: Vec<u8>,
    pub headers: SignatureHeaders,
    pub local: Vec<String>,
}

impl Fixture {
    pub fn new() -> Self {
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
        let headers = signer
            .sign(
                &RequestParts::new("POST", DESTINATION, "/fl/update?round=3", &body),
                at(0),
            )
            .unwrap();
        Self {
            pki,
            node,
            crl,
            verifier,
            cache,
            identity,
            signer,
            body,
            headers,
            local: vec![DESTINATION.to_string()],
        }
    }

    /// The request the fixture's signature covers (a 1 KiB body).
    pub fn parts(&self) -> RequestParts<'_> {
        RequestParts::new("POST", DESTINATION, "/fl/update?round=3", &self.body)
    }

    /// The signature headers as a receiver sees them.
    pub fn received(&self) -> ReceivedHeaders<'_> {
        ReceivedHeaders {
            from_node: Some(&self.headers.from_node),
            timestamp: Some(&self.headers.timestamp),
            nonce: Some(&self.headers.nonce),
            node_auth: Some(&self.headers.node_auth),
            signature: Some(&self.headers.signature),
        }
    }
}
