//! A sidecar's trust cache follows the authority's CRL: a revocation at the authority is
//! refused by the sidecar as soon as the long poll returns; with the authority gone, the
//! last good CRL keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use authority::{Authority, AuthorityConfig, Secret};
use rustls::pki_types::UnixTime;
use serde_json::{Value, json};
use sidecar::authority_client::AuthorityClient;
use sidecar::crl_source::CrlSource;
use tokio_util::sync::CancellationToken;
use trust_core::{
    CacheSettings, CertificateRejection, CertificateVerifier, NodeKey, RootCertificate, TrustCache,
    VerifySettings,
};

const TOKEN: &str = "follow-test-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_at_the_authority_reaches_the_sidecar_cache_through_the_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthorityConfig::new(dir.path().to_owned(), Secret::new(TOKEN));
    let (authority, _) =
        tokio::task::spawn_blocking(move || Authority::open(config, UnixTime::now()))
            .await
            .unwrap()
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop_authority = CancellationToken::new();
    let served = tokio::spawn(authority::run(
        listener,
        Arc::new(authority),
        stop_authority.clone(),
    ));

    let http = reqwest::Client::new();
    let csr = tokio::task::spawn_blocking(|| {
        NodeKey::generate()
            .unwrap()
            .certificate_request("n", &[], &[])
            .unwrap()
    })
    .await
    .unwrap();
    let enrolled: Value = http
        .post(format!("{url}/trust/enroll"))
        .json(&json!({"csr": csr, "token": TOKEN}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cert = pem::parse(enrolled["certificate"].as_str().unwrap())
        .unwrap()
        .into_contents();
    let root = RootCertificate::from_pem(enrolled["ca_certificate"].as_str().unwrap()).unwrap();

    let cache = Arc::new(TrustCache::new(
        CertificateVerifier::new(root, VerifySettings::default()),
        CacheSettings::default(),
    ));
    let follower = CrlSource::new(
        Arc::new(AuthorityClient::new(&url).unwrap()),
        Arc::clone(&cache),
        Duration::from_secs(30),
    );
    let mut installed = follower.installed();
    let stop_follower = CancellationToken::new();
    let following = tokio::spawn(follower.run(stop_follower.clone()));
    let first = *installed.wait_for(|n| *n > 0).await.unwrap();
    let identity = cache.verify(&cert, UnixTime::now()).unwrap();

    let sent = Instant::now();
    let revoked: Value = http
        .post(format!("{url}/trust/revoke/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["revoked"], true);
    installed.wait_for(|n| *n > first).await.unwrap();
    eprintln!(
        "revocation reached the sidecar cache {:?} after the revoke was sent",
        sent.elapsed()
    );
    assert!(matches!(
        cache.check_still_trusted(&identity, UnixTime::now()),
        Err(trust_core::Error::CertificateRejected(
            CertificateRejection::Revoked { .. }
        ))
    ));

    // The authority goes away: the last good CRL keeps serving (and still says revoked).
    stop_authority.cancel();
    served.await.unwrap().unwrap();
    let crl = cache.crl().unwrap();
    assert!(crl.number() > first);
    assert!(matches!(
        cache.verify(&cert, UnixTime::now()),
        Err(trust_core::Error::CertificateRejected(
            CertificateRejection::Revoked { .. }
        ))
    ));
    stop_follower.cancel();
    following.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_crl_from_the_authority_is_refused_and_the_newer_one_kept() {
    // A stand-in authority (an attacker on the path, or a restored backup) that serves
    // CRL 5, then CRL 4: validly signed, but older.
    let pki = trust_core::testing::TestPki::new();
    let now = UnixTime::now();
    let revoked = pki.node(3);
    let crl5 = pki.signed_crl(&[&revoked.cert.serial], 5, now, Duration::from_secs(3600));
    let crl4 = pki.signed_crl(&[], 4, now, Duration::from_secs(3600));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stub = {
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (served, crl5, crl4) =
                    (Arc::clone(&served), crl5.der.clone(), crl4.der.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let (der, number) = if n == 0 {
                            (crl5.clone(), 5)
                        } else {
                            (crl4.clone(), 4)
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("etag", format!("\"crl-{number}\""))
                                    .body(http_body_util::Full::new(bytes::Bytes::from(der)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    let cache = Arc::new(TrustCache::new(
        CertificateVerifier::new(pki.ca.root().clone(), VerifySettings::default()),
        CacheSettings::default(),
    ));
    let metrics = sidecar::metrics::Metrics::new();
    let follower = CrlSource::new(
        Arc::new(AuthorityClient::new(&url).unwrap()),
        Arc::clone(&cache),
        Duration::from_secs(1),
    )
    .with_metrics(metrics.clone());
    let mut installed = follower.installed();
    let stop = CancellationToken::new();
    let following = tokio::spawn(follower.run(stop.clone()));
    assert_eq!(*installed.wait_for(|n| *n > 0).await.unwrap(), 5);
    // The older CRL arrives next: refused as a rollback, counted, CRL 5 stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.crl_failures.get() == 0 {
        assert!(
            Instant::now() < deadline,
            "the rolled-back CRL was never refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*installed.borrow(), 5);
    assert_eq!(cache.crl().unwrap().number(), 5);
    assert!(
        matches!(
            cache.verify(&revoked.cert.der, UnixTime::now()),
            Err(trust_core::Error::CertificateRejected(
                CertificateRejection::Revoked { .. }
            ))
        ),
        "the revocation in CRL 5 still holds"
    );
    stop.cancel();
    following.await.unwrap();
    stub.abort();
}
