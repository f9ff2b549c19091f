//! Policy plugins, in a running sidecar and on the command line: `admin-only-revoke` lets
//! an admin revoke through the authority's sidecar and no node, however the path is
//! spelled; `replay-window` refuses the same signed request the second time, on any
//! connection; `trust-proxy policy check|test` with the real plugins passes every shipped
//! set's fixtures in `policies/tests/`, exits 1 on a wrong expectation and 65 on a broken
//! set.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::net::{Net, Node, policy_env};
use crate::support::{issue_dev, mtls, post, repo_root, run, text, trust_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_only_revoke_lets_an_admin_revoke_through_the_authoritys_sidecar_and_no_node() {
    let net = Net::start(&[]);
    let authority_addr = net.url.trim_start_matches("http://").to_owned();
    let env = policy_env("authority.toml");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let front = net.sidecar_with_env(100, &authority_addr, &[], &env);
    // A node to revoke (enrolled by its own sidecar).
    let _victim = net.sidecar(5, "127.0.0.1:9", &[]);
    let ca = net.tmp.path().join("node-100/state/ca-cert.pem");
    let authority_state = net.tmp.path().join("authority");
    let (admin_key, admin_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("admin"),
        &["--admin", "ops"],
    );
    let (node_key, node_cert) = issue_dev(
        &authority_state,
        &net.tmp.path().join("n7"),
        &["--node-id", "7"],
    );
    let base = format!("https://{}", front.addr("ingress"));
    let post = |path: &str, key: &PathBuf, cert: &PathBuf| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                "--path-as-is",
                "-w",
                "\\n%{http_code}",
                "--cacert",
            ])
            .arg(&ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg(format!("{base}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_owned(), body.to_owned())
    };
    for path in [
        "/trust/revoke/5",
        "/trust/revoke/5/",
        "/trust/re%76%6Fke/5",
        "/trust/%72evoke/5",
        "//trust//revoke/5",
        "/trust/./revoke/5",
        "/x/../trust/revoke/5",
    ] {
        let (code, body) = post(path, &node_key, &node_cert);
        assert_eq!(
            code,
            "403",
            "a node on {path}: {body}\n{}",
            front.log_text()
        );
    }
    // Letter case makes another route: the authority, which routes as the sidecar reads,
    // does not serve it and revokes nothing.
    let (code, body) = post("/TRUST/REVOKE/5", &node_key, &node_cert);
    assert_eq!(code, "404", "{body}");
    let front_node = Node {
        sidecar: front.into(),
        app: None,
        dir: PathBuf::new(),
    };
    assert!(
        front_node
            .metric("tpm_policy_evaluations_total{outcome=\"deny\",plugin=\"admin-only-revoke\",shadow=\"false\"}")
            .await
            >= 7.0
    );
    let status: Value = reqwest::get(format!("{}/trust/status", net.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["revoked_certificates"], 0,
        "no node revoked anything"
    );
    let (code, body) = post("/trust/revoke/5", &admin_key, &admin_cert);
    assert_eq!(code, "200", "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["revoked"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_window_refuses_the_same_signed_request_the_second_time() {
    use trust_core::{MessageSigner, NodeKey, RequestParts, UnixTime};
    let net = Net::start(&[]);
    let app_b = net.app("b", None);
    let env = policy_env("node.toml");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let b = Node {
        sidecar: net.sidecar_with_env(1, app_b.addr(""), &[], &env).into(),
        app: Some(app_b),
        dir: net.tmp.path().join("node-1"),
    };
    let ingress = b.sidecar.addr("ingress").to_owned();
    let ca = b.dir.join("state/ca-cert.pem");
    let (key, cert) = issue_dev(
        &net.tmp.path().join("authority"),
        &net.tmp.path().join("a"),
        &["--node-id", "7"],
    );
    let signer = MessageSigner::new(
        NodeKey::from_pkcs8_pem(&std::fs::read_to_string(&key).unwrap()).unwrap(),
        &trust_core::Subject::Node(trust_core::NodeId::new(7).unwrap()),
        &pem::parse(std::fs::read_to_string(&cert).unwrap())
            .unwrap()
            .into_contents(),
    );
    let body = br#"{"round":9}"#;
    let sign = || -> Vec<(&'static str, String)> {
        signer
            .sign(
                &RequestParts::new("POST", "localhost", "/fl/update", body),
                UnixTime::now(),
            )
            .unwrap()
            .pairs()
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect()
    };
    let captured = sign();
    let mut conn = mtls(&ingress, &ca, &key, &cert).await.unwrap();
    assert_eq!(
        post(&mut conn, "localhost", "/fl/update", body, &captured).await,
        Ok(200)
    );
    assert_eq!(
        post(&mut conn, "localhost", "/fl/update", body, &captured).await,
        Ok(401),
        "replayed"
    );
    // On another connection too: the store is the sidecar's, not the connection's.
    let mut other = mtls(&ingress, &ca, &key, &cert).await.unwrap();
    assert_eq!(
        post(&mut other, "localhost", "/fl/update", body, &captured).await,
        Ok(401)
    );
    // A fresh signature passes.
    assert_eq!(
        post(&mut other, "localhost", "/fl/update", body, &sign()).await,
        Ok(200)
    );
    assert!(
        b.metric("tpm_policy_evaluations_total{outcome=\"deny\",plugin=\"replay-window\",shadow=\"false\"}").await
            >= 2.0
    );
    // The plugin names the refusal a replay: it is counted beside the native verifier's
    // signature refusals, and no other reason moved.
    assert_eq!(
        b.metric("tpm_signature_verification_failures_total{reason=\"replayed\"}")
            .await,
        2.0
    );
    let (_, text) = b.admin("/metrics").await;
    let refused: f64 = text
        .lines()
        .filter(|l| l.starts_with("tpm_signature_verification_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 2.0, "only the two replays: {text}");
    assert_eq!(
        b.metric("tpm_requests_total{direction=\"ingress\",outcome=\"refused_policy\"}")
            .await,
        2.0
    );
}

fn plugin_dir() -> &'static str {
    policy_host::BUILT_PLUGIN_DIR
}

#[test]
fn every_shipped_policy_set_passes_its_fixtures() {
    let policies = repo_root().join("policies");
    let mut tested = 0;
    for entry in std::fs::read_dir(&policies).unwrap() {
        let set = entry.unwrap().path();
        if set.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cases = policies.join("tests").join(set.file_name().unwrap());
        assert!(
            cases.exists(),
            "{} has no fixtures at {}",
            set.display(),
            cases.display()
        );
        let out = run(trust_proxy()
            .args(["policy", "test", "--plugin-dir", plugin_dir(), "--set"])
            .arg(&set)
            .arg("--cases")
            .arg(&cases));
        assert!(out.status.success(), "{}", text(&out));
        tested += 1;
    }
    assert!(tested >= 2);
}

#[test]
fn a_wrong_expectation_exits_1_and_a_broken_set_exits_65() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = tmp.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"wrongly expected\"\nmethod = \"POST\"\npath = \"/trust/revoke/1\"\nroles = [\"node\"]\nexpect = \"allow\"\n",
    )
    .unwrap();
    let out = run(trust_proxy()
        .args(["policy", "test", "--plugin-dir", plugin_dir(), "--set"])
        .arg(repo_root().join("policies/authority.toml"))
        .arg("--cases")
        .arg(&cases));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("FAIL wrongly expected"),
        "{}",
        text(&out)
    );

    let set = tmp.path().join("set.toml");
    std::fs::write(&set, "[[plugin]]\nname = \"wrong-world\"\n").unwrap();
    let out = run(trust_proxy()
        .args(["policy", "check", "--plugin-dir", plugin_dir(), "--set"])
        .arg(&set));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        text(&out).contains("not a `sovereign:policy/policy` component"),
        "{}",
        text(&out)
    );
}
