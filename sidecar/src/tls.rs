//! TLS identity for the sidecar: a rustls client-certificate verifier backed by
//! [`TrustCache`], so handshakes use exactly the checks of `trust-core` (chain, validity,
//! EKU, key size, SPIFFE identity, current CRL) and its cache.
//!
//! rustls restores a resumed session's peer certificate without calling the verifier
//! again; the ingress therefore re-checks the peer with
//! [`TrustCache::check_still_trusted`] on every request, which is what cuts off a revoked
//! peer on open keep-alive connections and on resumed sessions.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use trust_core::{CertificateRejection, TrustCache};

/// Verifies client certificates against the network's root and current CRL.
pub struct TrustClientVerifier {
    cache: Arc<TrustCache>,
    anonymous_allowed: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl TrustClientVerifier {
    /// A verifier over `cache` (which holds the root and the current CRL).
    pub fn new(cache: Arc<TrustCache>) -> Self {
        let root = cache.verifier().root().der().to_vec();
        let hints = x509_parser::parse_x509_certificate(&root)
            .map(|(_, c)| vec![DistinguishedName::from(c.subject().as_raw().to_vec())])
            .unwrap_or_default();
        Self {
            cache,
            anonymous_allowed: false,
            hints,
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
        }
    }
}

impl TrustClientVerifier {
    /// Lets clients without a certificate finish the handshake; the ingress then admits
    /// them only on the routes configured as anonymous. A certificate that is presented
    /// is still verified in full.
    pub fn allow_anonymous(mut self, allowed: bool) -> Self {
        self.anonymous_allowed = allowed;
        self
    }
}

impl fmt::Debug for TrustClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustClientVerifier")
            .finish_non_exhaustive()
    }
}

/// Maps a refusal to the closest rustls certificate error (which becomes the TLS alert).
pub fn tls_error(rejection: &CertificateRejection) -> rustls::Error {
    use CertificateRejection as R;
    rustls::Error::InvalidCertificate(match rejection {
        R::Malformed => CertificateError::BadEncoding,
        R::UnknownIssuer => CertificateError::UnknownIssuer,
        R::Expired { .. } => CertificateError::Expired,
        R::NotYetValid { .. } => CertificateError::NotValidYet,
        R::Revoked { .. } => CertificateError::Revoked,
        R::CrlMissing => CertificateError::UnknownRevocationStatus,
        R::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
        R::CaAsLeaf | R::WrongUsage => CertificateError::InvalidPurpose,
        _ => CertificateError::ApplicationVerificationFailure,
    })
}

impl ClientCertVerifier for TrustClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        !self.anonymous_allowed
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.cache.verify(end_entity, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            // Debug only: the ingress logs the refused handshake once, with the client's
            // address and this reason, under its log sampling (anyone can cause this).
            Err(trust_core::Error::CertificateRejected(r)) => {
                tracing::debug!(reason = r.label(), "client certificate refused");
                Err(tls_error(&r))
            }
            Err(e) => {
                tracing::debug!(error = %e, "client certificate check failed");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::sync::LazyLock;
    use std::time::Duration;

    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use rustls::{
        ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig,
        ServerConnection,
    };
    use trust_core::testing::{TestNode, TestPki};
    use trust_core::{CacheSettings, CertificateVerifier, VerifySettings};

    use super::*;

    static PKI: LazyLock<TestPki> = LazyLock::new(TestPki::new);
    static SERVER: LazyLock<TestNode> = LazyLock::new(|| PKI.node(100));

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// A trust cache holding PKI's root and a CRL listing `revoked`, valid around the real
    /// clock (rustls passes the real time to the verifier).
    fn cache(revoked: &[&trust_core::Serial], number: u64) -> Arc<TrustCache> {
        let cache = TrustCache::new(
            CertificateVerifier::new(PKI.ca.root().clone(), VerifySettings::default()),
            CacheSettings::default(),
        );
        cache.install_crl(crl(revoked, number)).unwrap();
        Arc::new(cache)
    }

    fn crl(revoked: &[&trust_core::Serial], number: u64) -> trust_core::RevocationList {
        let now = UnixTime::now();
        let signed = PKI.signed_crl(revoked, number, now, Duration::from_secs(3600));
        trust_core::RevocationList::from_der(&signed.der, PKI.ca.root(), now).unwrap()
    }

    fn server_config(cache: Arc<TrustCache>) -> Arc<ServerConfig> {
        let chain = vec![SERVER.cert.der.clone()];
        let key = PrivateKeyDer::Pkcs8(SERVER.key.pkcs8_der());
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(Arc::new(TrustClientVerifier::new(cache)))
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }

    fn client_config(client: Option<&TestNode>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(PKI.ca.root().der().clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match client {
            Some(node) => builder
                .with_client_auth_cert(
                    vec![node.cert.der.clone()],
                    PrivateKeyDer::Pkcs8(node.key.pkcs8_der()),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    /// Runs a handshake in memory; returns the server side, or the server's error.
    fn handshake(
        server: &Arc<ServerConfig>,
        client: &Arc<ClientConfig>,
    ) -> Result<ServerConnection, rustls::Error> {
        let mut s = ServerConnection::new(Arc::clone(server)).unwrap();
        let mut c = ClientConnection::new(
            Arc::clone(client),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            // The client may fail once the server has refused; the server's error is what counts.
            let _ = c.process_new_packets();
            if !s.is_handshaking() && !c.is_handshaking() && !s.wants_write() {
                return Ok(s);
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    fn refused_with(result: Result<ServerConnection, rustls::Error>, want: CertificateError) {
        match result {
            Err(rustls::Error::InvalidCertificate(e)) => assert_eq!(e, want),
            Err(other) => panic!("expected {want:?}, got {other:?}"),
            Ok(_) => panic!("expected {want:?}, the handshake succeeded"),
        }
    }

    #[test]
    fn a_network_certificate_is_accepted_and_its_identity_is_cached() {
        let cache = cache(&[], 1);
        let client = PKI.node(1);
        let server = handshake(
            &server_config(Arc::clone(&cache)),
            &client_config(Some(&client)),
        )
        .unwrap();
        let peer = server.peer_certificates().unwrap()[0].clone();
        let identity = cache.verify(&peer, UnixTime::now()).unwrap();
        assert_eq!(identity.spiffe_id, "spiffe://test.sovereign/node/1");
        assert_eq!(cache.stats().hits, 1, "the handshake filled the cache");
    }

    #[test]
    fn no_client_certificate_revoked_or_foreign_ones_are_refused_in_the_handshake() {
        let revoked = PKI.node(2);
        let cache = cache(&[&revoked.cert.serial], 2);
        let server = server_config(cache);
        assert!(matches!(
            handshake(&server, &client_config(None)),
            Err(rustls::Error::NoCertificatesPresented)
        ));
        refused_with(
            handshake(&server, &client_config(Some(&revoked))),
            CertificateError::Revoked,
        );
        let impostor = TestPki::with_name("Test Root").node(3);
        refused_with(
            handshake(&server, &client_config(Some(&impostor))),
            CertificateError::UnknownIssuer,
        );
    }

    #[test]
    fn a_resumed_session_skips_the_verifier_so_the_per_request_check_is_what_refuses() {
        let cache = cache(&[], 1);
        let server = server_config(Arc::clone(&cache));
        let peer = PKI.node(4);
        let client = client_config(Some(&peer));
        let first = handshake(&server, &client).unwrap();
        assert_eq!(first.handshake_kind(), Some(HandshakeKind::Full));
        let identity = cache
            .verify(&first.peer_certificates().unwrap()[0], UnixTime::now())
            .unwrap();

        // The peer is revoked; a new CRL is installed.
        cache.install_crl(crl(&[&peer.cert.serial], 2)).unwrap();
        let resumed = handshake(&server, &client).unwrap();
        assert_eq!(
            resumed.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "rustls resumed without re-verifying"
        );
        // What the ingress does on every request:
        let restored = resumed.peer_certificates().unwrap()[0].clone();
        assert!(matches!(
            cache.verify(&restored, UnixTime::now()),
            Err(trust_core::Error::CertificateRejected(
                CertificateRejection::Revoked { .. }
            ))
        ));
        assert!(matches!(
            cache.check_still_trusted(&identity, UnixTime::now()),
            Err(trust_core::Error::CertificateRejected(
                CertificateRejection::Revoked { .. }
            ))
        ));
        // And a full handshake is refused outright.
        refused_with(
            handshake(&server, &client_config(Some(&peer))),
            CertificateError::Revoked,
        );
    }
}
