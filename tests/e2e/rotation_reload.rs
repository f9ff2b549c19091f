//! Certificates change under a running sidecar without failing requests: they rotate
//! before expiry; a certificate file the operator replaces is picked up and served; SIGHUP
//! reloads the certificate and the policy set on demand, and a broken certificate file is
//! kept out and counted while the old certificate keeps serving.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::support::net::{
    How, Net, Node, eventually, pem_body, replace_file, replacement_certificate, served_certificate,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_before_expiry_without_failing_requests() {
    let net = Net::start(&["--node-validity", "15s"]);
    let (a, b) = net.two_nodes(How::InProcess).await;
    let serial_before = std::fs::read_to_string(b.dir.join("state/node-cert.pem")).unwrap();
    let (a_ref, b_ref) = (&a, &b);
    let took = eventually(
        Duration::from_secs(40),
        "B renews its certificate",
        move || async move {
            let r = a_ref
                .call("POST", "http://node-1/whoami", json!({}), json!({}))
                .await;
            assert_eq!(r["status"], 200, "a request failed during rotation: {r}");
            b_ref
                .metric("tpm_certificate_rotations_total{result=\"renewed\"}")
                .await
                >= 1.0
        },
    )
    .await;
    let serial_after = std::fs::read_to_string(b.dir.join("state/node-cert.pem")).unwrap();
    assert_ne!(serial_before, serial_after, "a new certificate is on disk");
    // Once A has rotated too, its signed requests carry the new certificate's fingerprint
    // and must travel on connections made with that certificate (the peer binds them).
    a.wait_metric(
        "tpm_certificate_rotations_total{result=\"renewed\"}",
        1.0,
        Duration::from_secs(40),
    )
    .await;
    assert!(
        b.metric("tpm_certificate_rotations_total{result=\"renewed\"}")
            .await
            <= 2.0,
        "one renewal per two thirds of the life, not one per check"
    );
    for round in 0..3 {
        let r = a
            .call(
                "POST",
                "http://node-1/fl/update",
                json!({"after": "rotation", "round": round}),
                json!({}),
            )
            .await;
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["body"]["headers"]["x-verified-signature"], "true");
    }
    assert!(took > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_file_replaced_by_the_operator_is_picked_up_and_served() {
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes(How::InProcess).await;
    let state = b.dir.join("state");
    let new_cert = replacement_certificate(&net, &state, 1);
    replace_file(
        &state.join("node-cert.pem"),
        &std::fs::read(&new_cert).unwrap(),
    );
    b.wait_metric(
        "tpm_certificate_rotations_total{result=\"reloaded\"}",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        served_certificate(b.sidecar.addr("ingress")),
        pem_body(&std::fs::read_to_string(&new_cert).unwrap()),
        "the ingress serves the replaced certificate"
    );
    let r = a
        .call("POST", "http://node-1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(r["status"], 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_on_demand_and_a_broken_certificate_file_is_kept_out_and_counted() {
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let set = net.tmp.path().join("set.toml");
    std::fs::write(&set, "[[plugin]]\nname = \"admin-only-revoke\"\n").unwrap();
    let set_value = format!("\"{}\"", set.display());
    let plugin_dir = format!("\"{}\"", policy_host::BUILT_PLUGIN_DIR);
    // The periodic check is an hour away: only SIGHUP looks at the files in this test.
    let mut b = Node {
        sidecar: net
            .sidecar_with_env(
                1,
                app_b.addr(""),
                &[],
                &[
                    ("TRUST_PROXY_ROTATION_CHECK_EVERY", "1h"),
                    ("TRUST_PROXY_POLICY_SET", &set_value),
                    ("TRUST_PROXY_POLICY_PLUGIN_DIR", &plugin_dir),
                ],
            )
            .into(),
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let state = b.dir.join("state");
    let ingress = b.sidecar.addr("ingress").to_owned();
    let pid = b.sidecar.process().child.id().to_string();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let before = served_certificate(&ingress);
    let series = |result: &str| format!("tpm_certificate_rotations_total{{result=\"{result}\"}}");

    // A broken replacement: refused, counted, kept out; the old certificate keeps serving.
    replace_file(
        &state.join("node-cert.pem"),
        b"-----BEGIN CERTIFICATE-----\nnot one\n",
    );
    hup();
    b.wait_metric(&series("failed"), 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(b.metric(&series("reloaded")).await, 0.0);
    assert_eq!(
        served_certificate(&ingress),
        before,
        "the old certificate still serves"
    );
    let (code, ready) = b.admin("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(
        b.sidecar
            .process()
            .log_text()
            .contains("the replaced node certificate is unusable"),
        "the log says why"
    );
    // The policy set is reloaded on demand too, with no change to its file.
    let reloads = "tpm_policy_reloads_total{result=\"ok\"}";
    let reloaded = b.metric(reloads).await;
    hup();
    b.wait_metric(reloads, reloaded + 1.0, Duration::from_secs(10))
        .await;

    // A good replacement: picked up on the next SIGHUP and served.
    let new_cert = replacement_certificate(&net, &state, 1);
    replace_file(
        &state.join("node-cert.pem"),
        &std::fs::read(&new_cert).unwrap(),
    );
    hup();
    b.wait_metric(&series("reloaded"), 1.0, Duration::from_secs(10))
        .await;
    assert_eq!(b.metric(&series("failed")).await, 1.0);
    assert_eq!(
        served_certificate(&ingress),
        pem_body(&std::fs::read_to_string(&new_cert).unwrap())
    );
}
