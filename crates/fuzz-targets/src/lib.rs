//! # fuzz-targets
//!
//! What the fuzzer runs, on the stable toolchain. Each function below takes the fuzzer's bytes
//! and feeds them to one parser of untrusted input, through the same entry point production
//! uses, then checks an invariant that must hold for *any* input (not only "no panic"):
//!
//! | target | parser | invariant beyond "no panic" |
//! |---|---|---|
//! | [`signature`] | the five signature headers, the canonical string, `verify_request` | nothing made without the node's key verifies |
//! | [`certificate`] | a peer certificate through `CertificateVerifier::verify` | anything accepted is the fixture node itself |
//! | [`csr`] | a CSR (PEM and DER) through `VerifiedCsr` | an accepted CSR has an RSA key of 2048-8192 bits and only allowed names |
//! | [`crl`] | a CRL (DER and PEM) through `RevocationList` | anything accepted is the fixture CRL (number, entries) |
//! | [`enroll_body`] | a `POST /trust/enroll` body through `Authority::enroll` | an answer names a node id and carries a certificate |
//! | [`policy_set`] | a policy-set file through `PolicySet::parse` | every plugin route it keeps starts with `/` |
//! | [`path`] | the canonical path (`request_path::canonical_path`) and route prefixes | accepted: a fixed point, ASCII, and it decodes (as an app decodes) to what the input decodes to once dot and empty segments are resolved; a prefix covers it exactly when it covers the decoded route |
//!
//! `fuzz/` (a cargo-fuzz project, nightly) wraps each in a `fuzz_target!`;
//! `tests/replay.rs` replays the seed corpora (`fuzz/corpus/<target>/`) and every crash the
//! fuzzer ever found (`fuzz/regressions/<target>/`) through them in the normal test run.
//! `scripts/fuzz.sh` is the documented command; figures are in `docs/SECURITY.md`.
//!
//! The fixture PKI (`fixtures/`, made by `examples/make_fixtures.rs`) is fixed so that a
//! corpus entry means the same thing in every run: one root, node 7's certificate, CRL
//! number 3, all judged at [`trust_core::testing`]'s fixed time.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "a fuzz harness: a panic is how a target reports a finding, and the fixtures it \
              loads are checked in and tested"
)]

use std::path::Path;
use std::sync::LazyLock;

use trust_core::{
    CertificateVerifier, NamePolicy, PeerIdentity, ReceivedHeaders, RequestParts, RevocationList,
    RootCertificate, SignatureWindow, UnixTime, VerifiedCsr, VerifySettings,
};

/// The fixed "now" every target judges at: 2026-11-25T00:00:00Z (the fixtures' issue time).
pub const NOW: u64 = 1_795_564_800;

/// The fixture root, node certificate and CRL.
pub mod fixture {
    /// The root certificate (RSA-4096, trust domain `test.sovereign`).
    pub const ROOT_PEM: &str = include_str!("../fixtures/root.pem");
    /// Node 7's certificate, DER.
    pub const NODE_DER: &[u8] = include_bytes!("../fixtures/node-7.der");
    /// CRL number 3 (one unrelated serial revoked), DER.
    pub const CRL_DER: &[u8] = include_bytes!("../fixtures/crl-3.der");
    /// The bootstrap token of the enrollment target's authority.
    pub const TOKEN: &str = "fuzz-bootstrap-token";
}

fn now() -> UnixTime {
    trust_core::unix_time(NOW)
}

struct Pki {
    root: RootCertificate,
    crl: RevocationList,
    verifier: CertificateVerifier,
    node: PeerIdentity,
}

/// Loaded once per process. The fixtures are checked in and verified by `tests/replay.rs`,
/// so a failure here is a broken checkout, not an input the fuzzer found.
static PKI: LazyLock<Pki> = LazyLock::new(|| {
    let root = RootCertificate::from_pem(fixture::ROOT_PEM).expect("fixtures/root.pem loads");
    let crl = RevocationList::from_der(fixture::CRL_DER, &root, now()).expect("fixture CRL");
    let verifier = CertificateVerifier::new(root.clone(), VerifySettings::default());
    let node = verifier
        .verify(fixture::NODE_DER, Some(&crl), now())
        .expect("the fixture node verifies");
    Pki {
        root,
        crl,
        verifier,
        node,
    }
});

/// Splits fuzz input into `N` fields at NUL bytes (missing fields are empty), as lossy UTF-8.
fn fields<const N: usize>(data: &[u8]) -> [String; N] {
    let mut parts = data.splitn(N, |b| *b == 0);
    std::array::from_fn(|_| String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned())
}

/// Signature headers and the canonical string, verified as the ingress does for a request
/// from the fixture node: method, host, path, body, then the five headers (an empty field is
/// an absent header).
pub fn signature(data: &[u8]) {
    let [method, host, path, body, from, ts, nonce, auth, sig] = fields::<9>(data);
    let parts = RequestParts::new(&method, &host, &path, body.as_bytes());
    let _ = trust_core::signature::canonical_string(&parts, &from, &ts, &nonce);
    fn present(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    let headers = ReceivedHeaders {
        from_node: present(&from),
        timestamp: present(&ts),
        nonce: present(&nonce),
        node_auth: present(&auth),
        signature: present(&sig),
    };
    let result = trust_core::signature::verify_request(
        &headers,
        &parts,
        &PKI.node,
        &["node-7.test.sovereign:8443".to_owned()],
        SignatureWindow::default(),
        now(),
    );
    assert!(
        result.is_err(),
        "a signature made without node 7's key verified: {result:?}"
    );
}

/// A peer certificate, as a TLS handshake hands it to the verifier.
pub fn certificate(data: &[u8]) {
    let pki = &*PKI;
    if let Ok(identity) = pki.verifier.verify(data, Some(&pki.crl), now()) {
        assert_eq!(
            identity.spiffe_id, pki.node.spiffe_id,
            "only the fixture node's certificate can verify"
        );
        assert_eq!(identity.serial, pki.node.serial);
    }
}

/// A CSR as the authority receives it, PEM (as sent) and DER.
pub fn csr(data: &[u8]) {
    let policy = NamePolicy::loopback();
    let text = String::from_utf8_lossy(data);
    for verified in [
        VerifiedCsr::from_pem(&text, &policy),
        VerifiedCsr::from_der(data, &policy),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            (trust_core::csr::MIN_RSA_BITS..=trust_core::csr::MAX_RSA_BITS)
                .contains(&verified.key_bits),
            "accepted a {}-bit key",
            verified.key_bits
        );
        assert!(verified.dns_names.iter().all(|n| policy.allows_dns(n)));
        assert!(verified.ips.iter().all(|ip| policy.allows_ip(*ip)));
    }
}

/// A CRL as the sidecar's follower receives it (DER), and as a file (PEM).
pub fn crl(data: &[u8]) {
    let pki = &*PKI;
    let text = String::from_utf8_lossy(data);
    for list in [
        RevocationList::from_der(data, &pki.root, now()),
        RevocationList::from_pem(&text, &pki.root, now()),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(
            list.number(),
            pki.crl.number(),
            "only the fixture CRL verifies"
        );
        assert_eq!(list.len(), pki.crl.len());
    }
}

struct Enrolment {
    authority: authority::Authority,
    _dir: tempfile::TempDir,
}

/// One authority per process, in a temporary folder, with [`fixture::TOKEN`].
static AUTHORITY: LazyLock<Enrolment> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("a temporary folder for the authority");
    let config = authority::AuthorityConfig::new(
        dir.path().join("state"),
        authority::Secret::new(fixture::TOKEN),
    );
    let (authority, _) = authority::Authority::open(config, now()).expect("the authority opens");
    Enrolment {
        authority,
        _dir: dir,
    }
});

/// A `POST /trust/enroll` body: parsed as the HTTP layer does, then enrolled.
pub fn enroll_body(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<authority::service::EnrollRequest>(data) else {
        return;
    };
    if let Ok(answer) = AUTHORITY.authority.enroll(&request, now()) {
        assert!(answer.node_id.parse::<u32>().is_ok_and(|id| id > 0));
        assert!(
            answer
                .certificate
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
}

/// A policy-set file (TOML), as the sidecar reads it at start and on every reload.
pub fn policy_set(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = policy_host::set::PolicySet::parse(
        text,
        Path::new("fuzz-policies.toml"),
        Path::new("/nonexistent-plugin-dir"),
    ) {
        for plugin in &set.plugins {
            assert!(plugin.routes.iter().all(|r| r.as_str().starts_with('/')));
        }
    }
}

/// The canonical path every route rule, plugin and app shares, against an oracle written
/// apart from it: what an app decodes from the canonical form is what it decodes from the
/// input once dot and empty segments are resolved.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(canonical) = request_path::canonical_path(text) else {
        return;
    };
    assert!(canonical.is_ascii(), "{canonical:?} is not ASCII");
    assert!(
        request_path::is_canonical(&canonical),
        "{text:?} -> {canonical:?} is not its own form"
    );
    let decoded = percent_decode(&canonical);
    assert_eq!(
        Some(&decoded),
        resolve_segments(&percent_decode(text)).as_ref(),
        "{text:?} -> {canonical:?} decodes to another path"
    );
    let route = String::from_utf8(decoded).expect("the canonical form decodes to UTF-8");
    for prefix in ["/", "/fl", "/trust/revoke", "/a+b"] {
        let rule = request_path::RoutePrefix::new(prefix).expect("a valid prefix");
        let by_segments =
            prefix == "/" || route == prefix || route.starts_with(&format!("{prefix}/"));
        assert_eq!(
            rule.covers(&canonical),
            by_segments,
            "{text:?} under {prefix}"
        );
    }
}

/// Every `%XX` decoded (an accepted input has only valid escapes), as werkzeug and gunicorn
/// decode a path.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII escape");
            out.push(u8::from_str_radix(hex, 16).expect("a valid escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// `.`, `..` and empty segments resolved (a trailing slash kept after them); `None` above
/// the root.
fn resolve_segments(decoded: &[u8]) -> Option<Vec<u8>> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut slash_at_end = false;
    for piece in decoded.split(|b| *b == b'/').skip(1) {
        slash_at_end = matches!(piece, b"" | b"." | b"..");
        if piece == b".." {
            kept.pop()?;
        } else if !slash_at_end {
            kept.push(piece);
        }
    }
    let mut out = Vec::new();
    for k in kept {
        out.push(b'/');
        out.extend_from_slice(k);
    }
    if out.is_empty() || slash_at_end {
        out.push(b'/');
    }
    Some(out)
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/` and the replay test address them.
pub const TARGETS: &[(&str, Target)] = &[
    ("signature", signature),
    ("certificate", certificate),
    ("csr", csr),
    ("crl", crl),
    ("enroll_body", enroll_body),
    ("policy_set", policy_set),
    ("path", path),
];
