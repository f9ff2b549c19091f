//! Makes the fixture PKI in `fixtures/` and the seed corpora in `fuzz/corpus/`:
//! `cargo run -p fuzz-targets --example make_fixtures` from the repository root. Run it only
//! to start over: it replaces the root, so every seed is made again with it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a one-off generator"
)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use trust_core::testing::{TestPki, at};
use trust_core::{MessageSigner, NodeKey, RequestParts, Serial};

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    println!("wrote {}", path.display());
}

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = here.join("fixtures");
    let corpus = here.join("../../fuzz/corpus");
    let pki = TestPki::new();
    let node = pki.node(7);
    let other = Serial::from_bytes(&[0x42; 16]);
    let crl = pki.signed_crl(&[&other], 3, at(0), Duration::from_secs(30 * 86_400));
    write(&fixtures.join("root.pem"), pki.ca.root().pem().as_bytes());
    write(&fixtures.join("node-7.der"), &node.cert.der);
    write(&fixtures.join("crl-3.der"), &crl.der);

    // Seeds: the good input of each parser, and a near miss or two.
    write(&corpus.join("certificate/node-7.der"), &node.cert.der);
    write(&corpus.join("certificate/root.der"), pki.ca.root().der());
    write(&corpus.join("crl/crl-3.der"), &crl.der);
    write(&corpus.join("crl/crl-3.pem"), crl.pem.as_bytes());
    let key = NodeKey::generate().unwrap();
    let csr_pem = key
        .certificate_request(
            "node",
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
    write(&corpus.join("csr/loopback.pem"), csr_pem.as_bytes());
    let der = pem::parse(&csr_pem).unwrap().into_contents();
    write(&corpus.join("csr/loopback.der"), &der);

    let body = serde_json::json!({"csr": csr_pem, "token": "fuzz-bootstrap-token"});
    write(
        &corpus.join("enroll_body/new.json"),
        body.to_string().as_bytes(),
    );
    let body = serde_json::json!({"csr": csr_pem, "token": "fuzz-bootstrap-token", "node_id": 12});
    write(
        &corpus.join("enroll_body/with-id.json"),
        body.to_string().as_bytes(),
    );
    let body = serde_json::json!({"csr": csr_pem, "token": "wrong", "node_id": "x"});
    write(
        &corpus.join("enroll_body/bad-token.json"),
        body.to_string().as_bytes(),
    );

    // A real signed request from node 7 (valid, so the fuzzer starts from a full parse);
    // the target asserts nothing verifies, so the seed is signed at a time outside the
    // window the target judges at.
    let signer = MessageSigner::new(node.key, &node.subject, &node.cert.der);
    let parts = RequestParts::new(
        "POST",
        "node-7.test.sovereign:8443",
        "/fl/update?round=3",
        b"{\"w\":[1,2]}",
    );
    let headers = signer.sign(&parts, at(-3600)).unwrap();
    let mut seed = Vec::new();
    for field in [
        "POST",
        "node-7.test.sovereign:8443",
        "/fl/update?round=3",
        "{\"w\":[1,2]}",
        &headers.from_node,
        &headers.timestamp,
        &headers.nonce,
        &headers.node_auth,
        &headers.signature,
    ] {
        seed.extend_from_slice(field.as_bytes());
        seed.push(0);
    }
    seed.pop();
    write(&corpus.join("signature/signed-stale.bin"), &seed);

    for (name, text) in [
        ("node.toml", include_str!("../../../policies/node.toml")),
        (
            "authority.toml",
            include_str!("../../../policies/authority.toml"),
        ),
    ] {
        write(&corpus.join("policy_set").join(name), text.as_bytes());
    }
    for (name, text) in [
        ("revoke", "/trust/revoke/7"),
        ("dots", "/a/./b/../../trust//revoke/%37"),
        ("encoded", "/trust%2frevoke/7"),
        ("query", "/fl/update?x=/../y"),
    ] {
        write(&corpus.join("path").join(name), text.as_bytes());
    }
}
