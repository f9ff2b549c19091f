//! A Python client written from the documented scheme (tests/python/signer.py, using the
//! `cryptography` package) and our implementation accept each other's signatures.

use std::path::PathBuf;

use crate::support::{CliCa, ok, python, repo_root, run, text, trust_proxy};

const URL: &str = "http://node-2.localhost:8443/fl/update?round=3";
const AUTHORITY: &str = "node-2.localhost:8443";
const PATH: &str = "/fl/update?round=3";

fn signer_py() -> PathBuf {
    repo_root().join("tests/python/signer.py")
}

struct Setup {
    ca: CliCa,
    key: PathBuf,
    cert: PathBuf,
    body: PathBuf,
}

fn setup() -> Setup {
    let ca = CliCa::init();
    let (key, cert) = ca.node(1);
    let body = ca.path("update.json");
    std::fs::write(&body, br#"{"round":3,"weights":[0.25,-1.5]}"#).unwrap();
    Setup {
        ca,
        key,
        cert,
        body,
    }
}

/// Signs in Python; returns the headers as `Name: value` lines.
fn python_sign(s: &Setup, node_id: &str, extra: &[&str]) -> String {
    let json = ok(python()
        .arg(signer_py())
        .args([
            "sign",
            "--method",
            "POST",
            "--authority",
            AUTHORITY,
            "--path",
            PATH,
            "--node-id",
            node_id,
            "--key",
        ])
        .arg(&s.key)
        .arg("--cert")
        .arg(&s.cert)
        .arg("--body")
        .arg(&s.body)
        .args(extra));
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
    map.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// Our verifier, through the CLI; returns the output.
fn our_verify(s: &Setup, headers: &str) -> std::process::Output {
    let file = s.ca.path("headers.txt");
    std::fs::write(&file, headers).unwrap();
    run(trust_proxy()
        .args([
            "message", "verify", "--method", "POST", "--url", URL, "--peer",
        ])
        .arg(&s.cert)
        .arg("--ca")
        .arg(s.ca.ca_cert())
        .arg("--crl")
        .arg(s.ca.crl())
        .arg("--headers")
        .arg(&file)
        .arg("--body")
        .arg(&s.body))
}

#[test]
fn our_verifier_accepts_a_python_signature_made_from_the_docs() {
    let s = setup();
    let headers = python_sign(&s, "1", &[]);
    let out = our_verify(&s, &headers);
    assert!(out.status.success(), "{}\nheaders:\n{headers}", text(&out));
    assert!(text(&out).contains("signed by node 1"));
}

#[test]
fn python_verifies_our_signature_and_refuses_an_altered_body() {
    let s = setup();
    let signed = ok(trust_proxy()
        .args(["message", "sign", "--method", "POST", "--url", URL, "--key"])
        .arg(&s.key)
        .arg("--cert")
        .arg(&s.cert)
        .arg("--body")
        .arg(&s.body));
    let map: std::collections::BTreeMap<&str, &str> =
        signed.lines().filter_map(|l| l.split_once(": ")).collect();
    assert_eq!(map.len(), 5, "five headers: {signed}");
    let headers = s.ca.path("ours.json");
    std::fs::write(&headers, serde_json::to_vec(&map).unwrap()).unwrap();
    let verify = |body: &PathBuf| {
        run(python()
            .arg(signer_py())
            .args([
                "verify",
                "--method",
                "POST",
                "--authority",
                AUTHORITY,
                "--path",
                PATH,
                "--cert",
            ])
            .arg(&s.cert)
            .arg("--headers")
            .arg(&headers)
            .arg("--body")
            .arg(body))
    };
    let good = verify(&s.body);
    assert!(good.status.success(), "{}", text(&good));
    let altered = s.ca.path("altered.json");
    std::fs::write(&altered, br#"{"round":3,"weights":[9.0,9.0]}"#).unwrap();
    let bad = verify(&altered);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
}

#[test]
fn pythons_default_maximum_salt_is_refused_with_its_own_reason() {
    let s = setup();
    let headers = python_sign(&s, "1", &["--max-salt"]);
    let out = our_verify(&s, &headers);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("bad_salt_length"), "{}", text(&out));
    assert!(
        text(&out).contains("salt_length=32"),
        "the refusal says how to fix it: {}",
        text(&out)
    );
}

#[test]
fn a_python_client_claiming_another_node_id_is_refused() {
    let s = setup();
    let headers = python_sign(&s, "2", &[]);
    let out = our_verify(&s, &headers);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("unknown_node"), "{}", text(&out));
}

#[test]
fn a_stale_python_signature_is_refused() {
    let s = setup();
    let headers = python_sign(&s, "1", &["--timestamp", "1000000000"]);
    let out = our_verify(&s, &headers);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stale"), "{}", text(&out));
}
