//! App-to-app calls through real sidecars, and the identity they carry: node A's Flask app
//! calls node B's through both sidecars and B's app sees the verified caller; an operator's
//! curl with an admin certificate reads the trust status through the authority's sidecar
//! (HTTP/1.1, HTTP/2, TLS 1.2 and 1.3; anonymous clients only on the public route); the
//! egress refuses a peer whose certificate names another node than the URL, and what an
//! app must not send it; a pinned root is checked before enrolment.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::net::{How, Net, Node};
use crate::support::{issue_dev, trust_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flask_app_calls_another_through_both_sidecars_and_the_callee_sees_the_verified_caller() {
    let net = Net::start(&[]);
    let (a, b) = net.two_nodes(How::InProcess).await;
    let answer = a
        .call(
            "POST",
            "http://node-1/fl/update?round=1",
            json!({"round": 1, "weights": [0.25, 0.5]}),
            json!({"X-Verified-Node-Id": "99", "X-Verified-Roles": "admin"}),
        )
        .await;
    assert_eq!(answer["status"], 200, "{answer}");
    let seen = &answer["body"];
    assert_eq!(seen["app"], "b");
    assert_eq!(seen["path"], "/fl/update?round=1");
    assert_eq!(
        seen["headers"]["x-verified-node-id"], "2",
        "spoofed id replaced: {seen}"
    );
    assert_eq!(seen["headers"]["x-verified-roles"], "node");
    assert_eq!(
        seen["headers"]["x-verified-spiffe-id"],
        "spiffe://sovereign.local/node/2"
    );
    assert_eq!(seen["headers"]["x-verified-signature"], "true");
    assert_eq!(seen["headers"]["x-from-node"], "2");
    assert!(seen["body"].as_str().unwrap().contains("0.25"));
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await,
        1.0
    );
    assert_eq!(
        a.metric("tpm_requests_total{direction=\"egress\",outcome=\"forwarded\"}")
            .await,
        1.0
    );

    // A host the egress does not know is refused, not sent anywhere in plaintext.
    let unknown = a
        .call("GET", "http://elsewhere.example/x", Value::Null, json!({}))
        .await;
    assert_eq!(unknown["status"], 502, "{unknown}");
    assert!(
        unknown["body"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown peer")
    );

    // Both sidecars are ready and say why.
    let (code, ready) = b.admin("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["spiffe_id"], "spiffe://sovereign.local/node/1");
    assert!(ready["crl_number"].as_u64().is_some());
    // The key the node made never left it and is private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.dir.join("state/node-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_an_admin_certificate_reads_trust_status_through_the_authoritys_sidecar() {
    let net = Net::start(&[]);
    let authority_addr = net.url.trim_start_matches("http://").to_owned();
    // The CA certificate is public; everything else needs a client certificate. The
    // setting comes from the environment, as a container would pass it.
    let front = net.sidecar_with_env(
        100,
        &authority_addr,
        &[],
        &[(
            "TRUST_PROXY_INGRESS_ANONYMOUS_PREFIXES",
            r#"["/trust/ca-certificate"]"#,
        )],
    );
    let ca = net.tmp.path().join("node-100/state/ca-cert.pem");
    let (key, cert) = issue_dev(
        &net.tmp.path().join("authority"),
        &net.tmp.path().join("admin"),
        &["--admin", "ops"],
    );
    let base = format!("https://{}", front.addr("ingress"));
    let curl = |path: &str, args: &[&str], with_cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "\n%{http_code} %{http_version}", "--cacert"])
            .arg(&ca)
            .args(args);
        if with_cert {
            cmd.arg("--cert").arg(&cert).arg("--key").arg(&key);
        }
        let out = cmd.arg(format!("{base}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", ""));
        (body.to_owned(), tail.to_owned())
    };
    let (body, tail) = curl("/trust/status", &["--http1.1"], true);
    assert_eq!(tail, "200 1.1", "{body}\n{}", front.log_text());
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["total_nodes"], 1,
        "the authority's own sidecar enrolled: {status}"
    );
    assert_eq!(status["verified_nodes"], 1);
    // HTTP/2 by ALPN, and TLS 1.2 as well as 1.3.
    assert_eq!(curl("/trust/status", &["--http2"], true).1, "200 2");
    assert_eq!(
        curl("/trust/status", &["--tlsv1.2", "--tls-max", "1.2"], true).1,
        "200 2"
    );
    // Anonymous: the public route answers, the others are 401 with a reason.
    let (body, tail) = curl("/trust/ca-certificate", &[], false);
    assert_eq!(tail, "200 2", "{body}");
    assert!(body.contains("BEGIN CERTIFICATE"));
    let (body, tail) = curl("/trust/status", &[], false);
    assert_eq!(tail, "401 2", "{body}");
    assert!(body.contains("client certificate is required"), "{body}");
    let (body, tail) = curl("/trust/revoke/1", &["-X", "POST"], false);
    assert_eq!(tail, "401 2", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_refuses_a_peer_whose_certificate_names_another_node_than_the_url() {
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let b = net.sidecar(1, app_b.addr(""), &[]);
    let b_ingress = b.addr("ingress").to_owned();
    let b_port = b_ingress.rsplit(':').next().unwrap().to_owned();
    // A believes `node-9` lives at B's address; B's certificate says node 1. Hosts not
    // listed go to <host>:<B's port> and must carry <host> as a DNS name.
    let env = [("TRUST_PROXY_EGRESS_DEFAULT_PEER_PORT", b_port.as_str())];
    let sidecar_a = net.sidecar_with_env(2, "127.0.0.1:9", &[("node-9", &b_ingress, 9)], &env);
    let a = Node {
        app: Some(net.app("a", Some(sidecar_a.addr("egress")))),
        sidecar: sidecar_a.into(),
        dir: net.tmp.path().join("node-2"),
    };
    let b = Node {
        sidecar: b.into(),
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let impostor = a
        .call("POST", "http://node-9/whoami", json!({}), json!({}))
        .await;
    assert_eq!(impostor["status"], 502, "{impostor}");
    assert!(
        impostor["body"]["error"]
            .as_str()
            .unwrap()
            .contains("certificate was refused"),
        "{impostor}"
    );
    // By DNS name: B's certificate carries `localhost`, not a DNS name `127.0.0.1`.
    let by_name = a
        .call("POST", "http://localhost/whoami", json!({}), json!({}))
        .await;
    assert_eq!(by_name["status"], 200, "{by_name}");
    assert_eq!(by_name["body"]["headers"]["x-verified-node-id"], "2");
    let by_ip = a
        .call("POST", "http://127.0.0.1/whoami", json!({}), json!({}))
        .await;
    assert_eq!(by_ip["status"], 502, "{by_ip}");
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await,
        1.0,
        "only the correctly named request reached B's app"
    );
    assert!(
        a.metric("tpm_upstream_errors_total{direction=\"egress\",kind=\"peer_certificate\"}")
            .await
            >= 2.0
    );
    // What an app could send the egress that it must not forward: CONNECT (end-to-end TLS
    // the sidecar could not sign), origin-form (no peer named), an https:// URL.
    let egress = a.sidecar.addr("egress").to_owned();
    for (request, want) in [
        (
            "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
            405,
        ),
        ("GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        (
            "GET https://localhost/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n",
            400,
        ),
    ] {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = tokio::net::TcpStream::connect(&egress).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        let status = String::from_utf8_lossy(&head[9..12])
            .parse::<u16>()
            .unwrap();
        assert_eq!(status, want, "{request:?}");
    }
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"forwarded\"}")
            .await,
        1.0,
        "none of them reached B"
    );
}

#[test]
fn a_pinned_root_is_checked_before_enrolment_and_a_wrong_pin_is_refused() {
    let net = Net::start(&[]);
    let root = std::fs::read_to_string(net.tmp.path().join("authority/ca-cert.pem")).unwrap();
    let der = pem::parse(root).unwrap().into_contents();
    let pin = trust_core::Fingerprint::of_der(&der);
    // The right root, pinned in the base64url form `cert inspect` prints: it serves.
    let good = net.sidecar_with_env(
        1,
        "127.0.0.1:9",
        &[],
        &[("TRUST_PROXY_AUTHORITY_CA_FINGERPRINT", &pin.to_string())],
    );
    assert!(
        !good.log_text().contains("on first use"),
        "{}",
        good.log_text()
    );
    // Another root's fingerprint (a valid hex pin): refused before any key is enrolled.
    let config = std::fs::read_to_string(net.tmp.path().join("node-1/sidecar.toml"))
        .unwrap()
        .replace("node-1/state", "node-2/state")
        .replace("node_id = 1", "node_id = 2");
    assert!(config.contains("node-2/state") && config.contains("node_id = 2"));
    let file = net.tmp.path().join("node-2.toml");
    std::fs::write(&file, config).unwrap();
    let out = trust_proxy()
        .args(["run", "--config"])
        .arg(&file)
        .env("TRUST_PROXY_AUTHORITY_CA_FINGERPRINT", "ab".repeat(32))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("not the pinned"), "{stderr}");
    assert!(
        !net.tmp.path().join("node-2/state/node-cert.pem").exists(),
        "a node that refused the root must not have enrolled"
    );
}
