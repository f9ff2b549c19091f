//! x509-limbo (C2SP): the suite's path-validation cases run through this crate's verifier.
//!
//! Every case goes through two layers:
//! - **the verifier** (`CertificateVerifier`): what a sidecar does with a peer certificate.
//!   Each of the case's trusted certificates is tried as the network root; the case's CRL,
//!   when it has one, is loaded against that root and consulted (`verify`); a case without
//!   a CRL runs everything but the revocation check (`verify_own`).
//! - **the chain stage** (`verify_path`): the same path validation with the case's own
//!   anchors and intermediates, so that the suite's chain-building cases reach webpki with
//!   our algorithm set, skew and EKU even though our network has one level and an RSA root.
//!
//! The test fails on any case the suite says must fail that the verifier accepts, on any
//! refusal or chain-stage acceptance that no rule below explains, and when the checked-in
//! report (`docs/x509-limbo.md`) no longer matches what this run found; regenerate it with
//! `LIMBO_REPORT=docs/x509-limbo.md cargo test -p trust-core --test core limbo` from the
//! repository root (the path is taken relative to the workspace).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use trust_core::{
    CertificateRejection as Reject, CertificateVerifier, Error, RevocationList, RootCertificate,
    Usage, VerifySettings, verify_path,
};
use x509_parser::oid_registry::{
    OID_PKCS1_RSAENCRYPTION, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
    OID_PKCS1_SHA512WITHRSA,
};
use x509_parser::prelude::{FromDer as _, X509Certificate};

#[derive(Deserialize)]
struct Suite {
    testcases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    validation_kind: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<String>,
    expected_result: String,
    crls: Vec<String>,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x509-limbo/limbo-subset.json")
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text)
        .expect("the suite's PEM parses")
        .into_contents()
}

fn when(case: &Case) -> UnixTime {
    match &case.validation_time {
        None => UnixTime::now(),
        Some(t) => {
            let t = t.replace("+00:00", "Z");
            let at: SystemTime = humantime::parse_rfc3339(&t).expect("an RFC 3339 UTC time");
            UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap())
        }
    }
}

/// Whether every certificate of the case uses an RSA key and an RSA PKCS#1 signature: the
/// only kind our chain stage accepts (the network's root and nodes are RSA).
fn all_rsa(case: &Case) -> bool {
    let pems = case
        .trusted_certs
        .iter()
        .chain(&case.untrusted_intermediates)
        .chain(std::iter::once(&case.peer_certificate));
    pems.map(|p| der(p))
        .all(|d| match X509Certificate::from_der(&d) {
            Ok((_, c)) => {
                c.tbs_certificate.subject_pki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION
                    && [
                        OID_PKCS1_SHA256WITHRSA,
                        OID_PKCS1_SHA384WITHRSA,
                        OID_PKCS1_SHA512WITHRSA,
                    ]
                    .contains(&c.signature_algorithm.algorithm)
            }
            Err(_) => false,
        })
}

/// What a layer did with a case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused(String),
}

fn settings(case: &Case) -> VerifySettings {
    VerifySettings {
        clock_skew: Duration::from_secs(60),
        usage: if case.validation_kind == "CLIENT" {
            Usage::ClientAuth
        } else {
            Usage::ServerAuth
        },
    }
}

/// The sidecar's verifier, each trusted certificate tried as the network root.
fn through_verifier(case: &Case) -> Outcome {
    let now = when(case);
    let leaf = der(&case.peer_certificate);
    let mut reasons = Vec::new();
    for trusted in &case.trusted_certs {
        let root = match RootCertificate::from_pem(trusted) {
            Ok(root) => root,
            Err(e) => {
                reasons.push(format!("root refused: {}", root_reason(&e)));
                continue;
            }
        };
        let verifier = CertificateVerifier::new(root.clone(), settings(case));
        let result = if case.crls.is_empty() {
            verifier.verify_own(&leaf, now)
        } else {
            let crls: Result<Vec<_>, _> = case
                .crls
                .iter()
                .map(|c| RevocationList::from_pem(c, &root, now))
                .collect();
            match crls {
                Ok(crls) => crls
                    .iter()
                    .map(|crl| verifier.verify(&leaf, Some(crl), now))
                    .find(|r| r.is_err())
                    .unwrap_or_else(|| verifier.verify_own(&leaf, now)),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(_) => return Outcome::Accepted,
            Err(e) => reasons.push(certificate_reason(&e)),
        }
    }
    reasons.sort();
    reasons.dedup();
    Outcome::Refused(reasons.join("; "))
}

/// The case's trusted certificates and intermediates, as DER.
fn chain_inputs(case: &Case) -> (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>) {
    let all = |pems: &[String]| {
        pems.iter()
            .map(|p| CertificateDer::from(der(p)))
            .collect::<Vec<_>>()
    };
    (all(&case.trusted_certs), all(&case.untrusted_intermediates))
}

/// The chain stage alone, with the case's anchors and intermediates.
fn through_chain_stage(case: &Case) -> Outcome {
    let (trusted, intermediates) = chain_inputs(case);
    let anchors: Vec<_> = trusted
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    if anchors.is_empty() {
        return Outcome::Refused("no usable trust anchor".into());
    }
    match verify_path(
        &anchors,
        &intermediates,
        &der(&case.peer_certificate),
        when(case),
        &settings(case),
    ) {
        Ok(()) => Outcome::Accepted,
        Err(r) => Outcome::Refused(reject_label(&r)),
    }
}

fn root_reason(e: &Error) -> String {
    match e {
        Error::NotACa { reason } => (*reason).to_owned(),
        Error::Decode { detail, .. } if detail.contains("spiffe") || detail.contains("URI") => {
            "no spiffe:// trust domain".into()
        }
        other => other.to_string(),
    }
}

fn certificate_reason(e: &Error) -> String {
    match e {
        Error::CertificateRejected(r) => reject_label(r),
        Error::CrlRejected(r) => format!("CRL refused: {r}"),
        other => other.to_string(),
    }
}

fn reject_label(r: &Reject) -> String {
    match r {
        Reject::Expired { .. } => "expired".into(),
        Reject::NotYetValid { .. } => "not yet valid".into(),
        Reject::WeakKey { bits: 0 } => "key not RSA".into(),
        other => other.to_string(),
    }
}

/// The chain stage's question asked of webpki with every algorithm it knows (ECDSA, Ed25519,
/// RSA-PSS too): tells a refusal caused only by our RSA-only algorithm set from any other.
fn with_every_algorithm(case: &Case) -> Outcome {
    let (trusted, intermediates) = chain_inputs(case);
    let anchors: Vec<_> = trusted
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let leaf = CertificateDer::from(der(&case.peer_certificate));
    let Ok(cert) = webpki::EndEntityCert::try_from(&leaf) else {
        return Outcome::Refused("malformed".into());
    };
    let usage = match settings(case).usage {
        Usage::ClientAuth => webpki::KeyUsage::client_auth(),
        Usage::ServerAuth => webpki::KeyUsage::server_auth(),
    };
    match cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        when(case),
        usage,
        None,
        None,
    ) {
        Ok(_) => Outcome::Accepted,
        Err(e) => Outcome::Refused(format!("{e:?}")),
    }
}

/// Cases the suite expects to fail whose chain stage accepts them, and why that is safe.
const CHAIN_STAGE_ACCEPTS: &[(&str, &str)] = &[(
    "webpki::forbidden-rsa-not-divisible-by-8-in-root",
    "a 2052-bit RSA root: the CA/Browser Forum wants moduli divisible by 8, webpki and we \
     want 2048-8192 bits; our roots are made by `ca init` (RSA-4096) and the verifier refuses \
     this root anyway (no spiffe:// trust domain)",
)];

/// Cases the suite expects to pass that the chain stage refuses even with every algorithm,
/// and why.
const CHAIN_STAGE_REFUSALS: &[(&str, &str)] = &[
    (
        "rfc5280::ca-as-leaf",
        "a CA certificate presented as the peer: RFC 5280 allows it, webpki and our verifier \
         refuse it on purpose (a node certificate is never a CA)",
    ),
    (
        "rfc5280::nc::permitted-self-issued",
        "webpki refuses this chain (InvalidSignatureForPublicKey while building through a \
         self-issued intermediate under name constraints); not investigated further: our \
         network has neither intermediates nor name constraints",
    ),
    (
        "pathlen::validation-ignores-pathlen-in-leaf",
        "webpki refuses a leaf whose basicConstraints carries a path length (deliberate \
         strictness; our leaves carry CA:FALSE and no path length)",
    ),
    (
        "pathlen::self-issued-certs-pathlen",
        "webpki does not apply RFC 5280's exemption of self-issued intermediates from the path \
         length; our network has no intermediates",
    ),
];

/// How one case came out, and the reason for a divergence from the suite.
struct Verdict {
    id: String,
    expected: String,
    verifier: Outcome,
    chain: Outcome,
    /// `Some` when we differ from the suite: (layer, our answer, why).
    divergence: Vec<(&'static str, String, String)>,
    /// A divergence no rule explains (the test fails on it).
    unexplained: Vec<String>,
}

const ROOT_REASON: &str = "the verifier trusts only a root made for this network: an RSA key of 2048-8192 bits, CA:TRUE, \
    keyCertSign and cRLSign, and a spiffe://<trust-domain> URI SAN naming the network";
const NC_REASON: &str = "webpki fails closed on name constraints it does not evaluate \
    (directoryName, rfc822Name) and refuses the chain; our root carries no name constraints";
const RSA_REASON: &str = "the chain stage verifies RSA PKCS#1 signatures only (the network's \
    root and nodes are RSA); with every webpki algorithm the same chain is accepted";

fn judge(case: &Case) -> Verdict {
    let verifier = through_verifier(case);
    let chain = through_chain_stage(case);
    let mut divergence = Vec::new();
    let mut unexplained = Vec::new();
    let lookup = |table: &[(&str, &str)]| {
        table
            .iter()
            .find(|(id, _)| *id == case.id)
            .map(|(_, why)| (*why).to_owned())
    };
    if case.expected_result == "FAILURE" {
        if verifier == Outcome::Accepted {
            unexplained.push(format!(
                "{}: FALSE ACCEPT by the verifier (the suite expects a refusal)",
                case.id
            ));
        }
        if chain == Outcome::Accepted {
            match lookup(CHAIN_STAGE_ACCEPTS) {
                Some(why) => divergence.push(("chain stage", "accepted".into(), why)),
                None => unexplained.push(format!(
                    "{}: the chain stage accepts a case the suite expects to fail",
                    case.id
                )),
            }
        }
    } else {
        if let Outcome::Refused(r) = &verifier {
            if r.starts_with("root refused") {
                divergence.push(("verifier", r.clone(), ROOT_REASON.into()));
            } else {
                unexplained.push(format!("{}: the verifier refuses: {r}", case.id));
            }
        }
        if let Outcome::Refused(r) = &chain {
            let every = with_every_algorithm(case);
            let why = if !all_rsa(case) && every == Outcome::Accepted {
                Some(RSA_REASON.to_owned())
            } else if every == Outcome::Refused("NameConstraintViolation".into())
                && case.id.starts_with("rfc5280::nc::")
            {
                Some(NC_REASON.to_owned())
            } else {
                lookup(CHAIN_STAGE_REFUSALS)
            };
            match why {
                Some(why) => divergence.push(("chain stage", r.clone(), why)),
                None => unexplained.push(format!(
                    "{}: the chain stage refuses: {r} (every algorithm: {:?})",
                    case.id,
                    with_every_algorithm(case)
                )),
            }
        }
    }
    Verdict {
        id: case.id.clone(),
        expected: case.expected_result.clone(),
        verifier,
        chain,
        divergence,
        unexplained,
    }
}

fn report(verdicts: &[Verdict]) -> String {
    let count = |f: &dyn Fn(&Verdict) -> bool| verdicts.iter().filter(|v| f(v)).count();
    let expected_fail = count(&|v| v.expected == "FAILURE");
    let expected_pass = verdicts.len() - expected_fail;
    let mut s = String::new();
    let w = &mut s;
    writeln!(
        w,
        "# x509-limbo: what our certificate verifier does with the suite\n"
    )
    .unwrap();
    writeln!(
        w,
        "Generated by `crates/trust-core/tests/core/limbo.rs` (which fails when this file no \
         longer matches a run); regenerate with\n`LIMBO_REPORT=docs/x509-limbo.md cargo test -p \
         trust-core --test core limbo`. The cases are the {} of \
         `crates/trust-core/tests/fixtures/x509-limbo/limbo-subset.json` (C2SP x509-limbo, \
         compiled 2026-11, without BetterTLS).\n",
        verdicts.len()
    )
    .unwrap();
    writeln!(w, "Two layers run every case:\n").unwrap();
    writeln!(
        w,
        "- **verifier**: `CertificateVerifier` as the sidecar uses it, each trusted \
         certificate tried as the network root, the case's CRL loaded against it and \
         consulted when the case has one;\n- **chain stage**: `trust_core::verify_path`, the \
         same path validation with the case's own anchors and intermediates (RSA PKCS#1 \
         algorithms, 60 s skew, the EKU of the case's side).\n\nNeither layer checks the \
         suite's expected DNS or IP peer names: a node is known by its SPIFFE URI SAN, and \
         the egress checks that the peer's certificate names the node its URL names.\n"
    )
    .unwrap();
    writeln!(w, "| | cases | verifier accepts | chain stage accepts |").unwrap();
    writeln!(w, "|---|---|---|---|").unwrap();
    for (label, want) in [
        ("suite expects failure", "FAILURE"),
        ("suite expects success", "SUCCESS"),
    ] {
        writeln!(
            w,
            "| {label} | {} | {} | {} |",
            count(&|v| v.expected == want),
            count(&|v| v.expected == want && v.verifier == Outcome::Accepted),
            count(&|v| v.expected == want && v.chain == Outcome::Accepted),
        )
        .unwrap();
    }
    let at_root =
        count(&|v| matches!(&v.verifier, Outcome::Refused(r) if r.starts_with("root refused")));
    writeln!(
        w,
        "\nNo case the suite expects to fail is accepted by the verifier ({expected_fail} of \
         {expected_fail} refused). Of the {expected_pass} it expects to pass, the verifier \
         accepts none. {at_root} of the {} cases are refused at the root, by design: the \
         suite's roots are not roots of one of our networks, so the verifier layer shows that \
         a foreign root is never trusted, and the chain stage is what exercises path \
         validation. Our own refusals (expired, not yet valid, CA as leaf, wrong or missing \
         EKU, weak key, another root with the same name, revoked, CRL from another key, \
         expired CRL) are tested on the network's own PKI in \
         `crates/trust-core/tests/core/certificates.rs` and `revocation.rs`. The divergences, \
         grouped by reason:\n",
        verdicts.len()
    )
    .unwrap();
    let mut by_reason: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for v in verdicts {
        for (layer, _, why) in &v.divergence {
            by_reason
                .entry((layer, why.as_str()))
                .or_default()
                .push(&v.id);
        }
    }
    writeln!(w, "| layer | reason | cases | ids |").unwrap();
    writeln!(w, "|---|---|---|---|").unwrap();
    for ((layer, why), ids) in &by_reason {
        let shown = if ids.len() > 12 {
            format!("{} and {} more", ids[..12].join(", "), ids.len() - 12)
        } else {
            ids.join(", ")
        };
        writeln!(w, "| {layer} | {why} | {} | {shown} |", ids.len()).unwrap();
    }
    s
}

#[test]
fn the_verifier_accepts_no_case_the_suite_refuses_and_every_divergence_has_a_reason() {
    let suite: Suite =
        serde_json::from_slice(&std::fs::read(fixture()).expect("the limbo fixture"))
            .expect("the limbo fixture parses");
    assert!(suite.testcases.len() >= 200, "the fixture lost cases");
    let verdicts: Vec<Verdict> = suite.testcases.iter().map(judge).collect();
    let unexplained: Vec<&String> = verdicts.iter().flat_map(|v| &v.unexplained).collect();
    assert!(
        unexplained.is_empty(),
        "x509-limbo divergences without a reason:\n{}",
        unexplained
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let used = |id: &str| {
        verdicts
            .iter()
            .any(|v| v.id == id && !v.divergence.is_empty())
    };
    for (id, _) in CHAIN_STAGE_ACCEPTS.iter().chain(CHAIN_STAGE_REFUSALS) {
        assert!(
            used(id),
            "{id}: explained but no longer diverges; drop its entry"
        );
    }
    let text = report(&verdicts);
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Ok(out) = std::env::var("LIMBO_REPORT") {
        std::fs::write(workspace.join(out), &text).expect("write the report");
    }
    let checked_in = std::fs::read_to_string(workspace.join("docs/x509-limbo.md"))
        .expect("docs/x509-limbo.md exists");
    assert_eq!(
        checked_in, text,
        "docs/x509-limbo.md no longer matches this run; regenerate it (see its first lines)"
    );
}
