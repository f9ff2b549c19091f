//! Revocation and the CRL: a revoked node is cut off on its open connection and on new
//! ones, its own sidecar reports it not ready, and cannot come back by resuming its TLS session; a sidecar's trust cache follows
//! the authority's CRL by long poll and refuses a rolled-back one; with the authority gone
//! sidecars serve on the last good CRL until it expires, then refuse; a sidecar restarted
//! with the authority down and no usable saved CRL refuses everyone.

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

use crate::support::net::{How, Net, Node, eventually, s_client};
use crate::support::{AuthorityApi, mtls, post};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_on_its_open_connection_and_on_new_ones() {
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes(How::InProcess).await;
    let first = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(first["status"], 200, "{first}");

    let revoked = net.api().revoke(2).await;
    assert!(revoked.revoked && !revoked.already, "{revoked:?}");
    let revoked_at = Instant::now();
    let status = net.api().status().await;
    assert_eq!(
        (status.verified_nodes, status.revoked_certificates),
        (1, 1),
        "the authority counts node 2 revoked and node 1 verified: {status:?}"
    );
    // The same app, the same keep-alive connection through A's egress to B.
    let a_ref = &a;
    let took = eventually(
        Duration::from_secs(10),
        "A refused after revocation",
        move || async move {
            let r = a_ref
                .call("POST", "http://node-1/whoami", json!({}), json!({}))
                .await;
            r["status"] != 200
        },
    )
    .await;
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert!(
        r["status"] == 403 || r["status"] == 502,
        "refused on the open connection or at the handshake: {r}"
    );
    eprintln!(
        "revocation took effect at B after {took:?} ({:?} since the answer)",
        revoked_at.elapsed()
    );
    assert!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"refused_certificate\"}")
            .await
            >= 1.0
            || b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
                .await
                >= 1.0
    );
    // The revoked node's own sidecar is not ready, and says why (its container's health
    // check follows /readyz); the unrevoked node stays ready.
    eventually(
        Duration::from_secs(10),
        "A's sidecar not ready",
        move || async move { a_ref.admin("/readyz").await.0 == 503 },
    )
    .await;
    let (_, why) = a.admin("/readyz").await;
    assert!(why.contains("is revoked by CRL"), "{why}");
    assert_eq!(b.admin("/readyz").await.0, 200);
    // A new sidecar for the same revoked node cannot get in either: B refuses the
    // handshake of a fresh connection (A's restart opens new ones).
    drop(a);
    let peers = [("node-1", b.sidecar.addr("ingress"), 1)];
    let sidecar_a = net
        .node_sidecar(How::InProcess, 2, "127.0.0.1:9", &peers)
        .await;
    let app_a = net.app("a2", Some(sidecar_a.addr("egress")));
    let a2 = Node {
        sidecar: sidecar_a,
        app: Some(app_a),
        dir: net.tmp.path().join("node-2"),
    };
    let (code, why) = a2.admin("/readyz").await;
    assert!(
        code == 503 && why.contains("is revoked by CRL"),
        "restarted, the revoked node knows it is revoked: {why}"
    );
    let r = a2
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(
        r["status"], 502,
        "a revoked node's new connection is refused: {r}"
    );
    assert!(
        b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_cannot_come_back_by_resuming_its_tls_session() {
    // Envoy's CVE-2022-21654: a revoked client kept access through session resumption.
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes(How::InProcess).await;
    let ingress = b.sidecar.addr("ingress").to_owned();
    let a_state = a.dir.join("state");
    let first_session = net.tmp.path().join("a.session");
    let first = s_client(&ingress, &a_state, None, &first_session);
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    // Resumption works while A is trusted (so the refusal below is about revocation).
    let again = s_client(
        &ingress,
        &a_state,
        Some(&first_session),
        &net.tmp.path().join("a2.session"),
    );
    assert!(
        again.contains("Reused, TLSv1.3"),
        "the session resumes: {again}"
    );
    assert!(again.contains("HTTP/1.1 200"), "{again}");

    let crl_before = b.metric("tpm_crl_number").await;
    let revoked = net.api().revoke(2).await;
    assert!(revoked.revoked && !revoked.already, "{revoked:?}");
    b.wait_metric("tpm_crl_number", crl_before + 1.0, Duration::from_secs(10))
        .await;
    let resumed = s_client(
        &ingress,
        &a_state,
        Some(&first_session),
        &net.tmp.path().join("a3.session"),
    );
    assert!(
        !resumed.contains("HTTP/1.1 200"),
        "a resumed session of a revoked node gets no answer: {resumed}"
    );
    assert!(
        b.metric("tpm_tls_handshake_failures_total{reason=\"certificate\"}")
            .await
            >= 1.0,
        "counted as a certificate refusal"
    );
}

/// The bootstrap token of the in-process authority the CRL follower is tested against.
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
    let revoked = AuthorityApi::new(&url).revoke(1).await;
    assert!(revoked.revoked, "{revoked:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_authority_gone_sidecars_serve_on_the_last_crl_until_it_expires_then_refuse() {
    let mut net = Net::start(&["--crl-validity", "10s"]);
    let (a, b) = net.two_nodes(How::InProcess).await;
    assert_eq!(
        a.call("POST", "http://node-1/whoami", json!({}), json!({}))
            .await["status"],
        200
    );
    net.authority.take().unwrap().kill9();
    // Still served on the last good CRL.
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(r["status"], 200, "{r}");
    b.wait_metric(
        "tpm_crl_update_failures_total",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    let b_ref = &b;
    assert!(b.metric("tpm_crl_age_seconds").await >= 0.0);
    // Past nextUpdate: not ready, and the peer is refused (fail closed).
    eventually(
        Duration::from_secs(30),
        "B not ready once its CRL expired",
        move || async move { b_ref.admin("/readyz").await.0 == 503 },
    )
    .await;
    let (_, why) = b.admin("/readyz").await;
    assert!(why.contains("nextUpdate"), "{why}");
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_ne!(r["status"], 200, "an expired CRL admits nobody: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_with_the_authority_down_and_no_usable_saved_crl_a_sidecar_refuses_everyone() {
    let mut net = Net::start(&[]);
    let (a, b) = net.two_nodes(How::Process).await;
    let ok = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(ok["status"], 200, "{ok}");
    net.authority.take().unwrap().kill9();
    let Node { sidecar, app, dir } = b;
    drop(sidecar);
    let app_b = app.unwrap();
    let state = dir.join("state");
    let a_state = a.dir.join("state");
    for case in ["garbage", "missing"] {
        let crl = state.join("crl.der");
        if case == "garbage" {
            std::fs::write(&crl, b"\x30\x82\x01\x00 not a CRL").unwrap();
        } else {
            let _ = std::fs::remove_file(&crl);
        }
        // B comes back with its certificate but no CRL it can trust, and no authority.
        let mut b = Node {
            sidecar: net.sidecar(1, app_b.addr(""), &[]).into(),
            app: None,
            dir: dir.clone(),
        };
        let (code, why) = b.admin("/readyz").await;
        assert_eq!(code, 503, "{case}: {why}");
        assert!(why.to_lowercase().contains("crl"), "{case}: {why}");
        // Fail closed: A's valid certificate is refused (no CRL, no trust).
        let refused = match mtls(
            b.sidecar.addr("ingress"),
            &state.join("ca-cert.pem"),
            &a_state.join("node-key.pem"),
            &a_state.join("node-cert.pem"),
        )
        .await
        {
            Err(_) => true,
            Ok(mut conn) => !matches!(
                post(&mut conn, "localhost", "/whoami", b"{}", &[]).await,
                Ok(200)
            ),
        };
        assert!(refused, "{case}: a peer was admitted without a CRL");
        b.wait_metric(
            "tpm_tls_handshake_failures_total{reason=\"certificate\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await;
        assert!(
            b.sidecar.process().log_text().contains("CRL"),
            "{case}: the log says why"
        );
    }
}
