//! Everything the CA writes is read and accepted (or refused) by openssl, an independent
//! implementation: certificates, CSRs in both directions, and the CRL.

use crate::support::{CliCa, ok, run, text, trust_proxy};
use std::process::Command;

fn openssl() -> Command {
    Command::new("openssl")
}

#[test]
fn openssl_reads_the_root_as_a_ten_year_rsa_4096_ca() {
    let ca = CliCa::init();
    let dump = ok(openssl()
        .args(["x509", "-noout", "-text", "-in"])
        .arg(ca.ca_cert()));
    assert!(dump.contains("Public-Key: (4096 bit)"), "{dump}");
    assert!(dump.contains("CA:TRUE"), "{dump}");
    assert!(dump.contains("Certificate Sign, CRL Sign"), "{dump}");
    assert!(dump.contains("URI:spiffe://interop.test"), "{dump}");
    let dates = ok(openssl()
        .args(["x509", "-noout", "-startdate", "-enddate", "-in"])
        .arg(ca.ca_cert()));
    let years: Vec<i32> = dates
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).and_then(|y| y.parse().ok()))
        .collect();
    assert_eq!(years.len(), 2, "{dates}");
    assert_eq!(years[1] - years[0], 10, "{dates}");
    let mode = std::fs::metadata(ca.state().join("ca-key.pem")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn openssl_verifies_issued_node_certificates_and_sees_their_names() {
    let ca = CliCa::init();
    let (_, cert) = ca.node(3);
    let verify = ok(openssl()
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.ca_cert())
        .arg(&cert));
    assert!(verify.contains(": OK"), "{verify}");
    let dump = ok(openssl()
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert));
    for want in [
        "Public-Key: (2048 bit)",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "URI:spiffe://interop.test/node/3",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "CA:FALSE",
        "Subject: O = interop.test, CN = node-3",
    ] {
        assert!(dump.contains(want), "missing {want:?} in:\n{dump}");
    }
    // One year: still valid 364 days from now, expired within 366.
    let day = 86_400;
    let checkend = |days: u32| {
        run(openssl()
            .args([
                "x509",
                "-noout",
                "-checkend",
                &(days * day).to_string(),
                "-in",
            ])
            .arg(&cert))
        .status
        .success()
    };
    assert!(
        checkend(364),
        "the node certificate expires within 364 days"
    );
    assert!(!checkend(366), "the node certificate outlives a year");
}

#[test]
fn a_csr_from_our_key_command_passes_openssl_and_its_certificate_verifies() {
    let ca = CliCa::init();
    let key = ca.path("n.key");
    let csr = ca.path("n.csr");
    let cert = ca.path("n.pem");
    ok(trust_proxy().args(["key", "generate", "--out"]).arg(&key));
    ok(trust_proxy()
        .args(["key", "csr", "--dns", "localhost", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(&csr));
    let check = run(openssl()
        .args(["req", "-noout", "-verify", "-in"])
        .arg(&csr));
    assert!(
        check.status.success() && text(&check).contains("verify OK"),
        "{}",
        text(&check)
    );
    let out = ca.issue(9, &csr);
    assert!(out.status.success(), "{}", text(&out));
    ok(openssl()
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.ca_cert())
        .arg(&cert));
}

/// An openssl-made key and CSR `<name>.csr` over an RSA key of `bits`, with `san` if given.
fn openssl_csr(ca: &CliCa, name: &str, bits: u32, san: Option<&str>) -> std::path::PathBuf {
    let csr = ca.path(&format!("{name}.csr"));
    let mut cmd = openssl();
    cmd.args(["req", "-new", "-nodes", "-subj", "/CN=whatever", "-newkey"])
        .arg(format!("rsa:{bits}"))
        .arg("-keyout")
        .arg(ca.path(&format!("{name}.key")))
        .arg("-out")
        .arg(&csr);
    if let Some(san) = san {
        cmd.arg("-addext").arg(format!("subjectAltName={san}"));
    }
    ok(&mut cmd);
    csr
}

#[test]
fn a_csr_over_a_key_with_a_small_public_exponent_is_refused() {
    let ca = CliCa::init();
    let csr = ca.path("e3.csr");
    ok(openssl()
        .args([
            "req", "-new", "-nodes", "-subj", "/CN=e3", "-newkey", "rsa:2048",
        ])
        .args(["-pkeyopt", "rsa_keygen_pubexp:3", "-keyout"])
        .arg(ca.path("e3.key"))
        .arg("-out")
        .arg(&csr));
    let out = ca.issue(21, &csr);
    assert!(!out.status.success(), "an exponent-3 key was issued");
    assert!(
        text(&out).contains("public exponent is 3"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_csr_made_by_openssl_is_issued_and_a_weak_one_is_refused() {
    let ca = CliCa::init();
    let csr = openssl_csr(&ca, "o", 2048, Some("DNS:localhost,IP:127.0.0.1"));
    let out = ca.issue(4, &csr);
    assert!(out.status.success(), "{}", text(&out));
    ok(openssl()
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.ca_cert())
        .arg(csr.with_extension("pem")));

    let weak = openssl_csr(&ca, "weak", 1024, None);
    let out = ca.issue(5, &weak);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("1024 bits"), "{}", text(&out));
    assert!(!weak.with_extension("pem").exists());

    let forged = openssl_csr(
        &ca,
        "forged",
        2048,
        Some("URI:spiffe://interop.test/admin/root"),
    );
    let out = ca.issue(6, &forged);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("URI"), "{}", text(&out));
}

/// `openssl verify -crl_check` of `cert` against the CA and its current CRL.
fn verify_with_crl(ca: &CliCa, cert: &std::path::Path) -> Command {
    let mut cmd = openssl();
    cmd.args(["verify", "-crl_check", "-CAfile"])
        .arg(ca.ca_cert())
        .arg("-CRLfile")
        .arg(ca.crl())
        .arg(cert);
    cmd
}

#[test]
fn openssl_reads_the_crl_and_refuses_a_revoked_certificate_with_crl_check() {
    let ca = CliCa::init();
    let (_, revoked) = ca.node(1);
    let (_, kept) = ca.node(2);
    let before = ok(&mut verify_with_crl(&ca, &revoked));
    assert!(before.contains(": OK"), "{before}");

    ok(trust_proxy()
        .args(["ca", "revoke", "--cert"])
        .arg(&revoked)
        .arg("--state-dir")
        .arg(ca.state()));
    let crl_check = run(openssl()
        .args(["crl", "-noout", "-CAfile"])
        .arg(ca.ca_cert())
        .arg("-in")
        .arg(ca.crl()));
    assert!(
        crl_check.status.success() && text(&crl_check).contains("verify OK"),
        "{}",
        text(&crl_check)
    );
    let serial = ok(openssl()
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&revoked));
    let serial = serial.trim().trim_start_matches("serial=");
    let crl_text = ok(openssl()
        .args(["crl", "-noout", "-text", "-in"])
        .arg(ca.crl()));
    assert!(
        crl_text.contains(serial),
        "serial {serial} not in:\n{crl_text}"
    );
    assert!(
        crl_text.contains("X509v3 CRL Number: \n                2"),
        "{crl_text}"
    );

    let after = run(&mut verify_with_crl(&ca, &revoked));
    assert!(!after.status.success(), "{}", text(&after));
    assert!(
        text(&after).contains("certificate revoked"),
        "{}",
        text(&after)
    );
    ok(&mut verify_with_crl(&ca, &kept));

    // Our own verifier agrees with openssl.
    let ours = run(trust_proxy()
        .args(["cert", "verify", "--ca"])
        .arg(ca.ca_cert())
        .arg("--crl")
        .arg(ca.crl())
        .arg(&revoked));
    assert_eq!(ours.status.code(), Some(1), "{}", text(&ours));
    assert!(text(&ours).contains("revoked"));
    ok(trust_proxy()
        .args(["cert", "verify", "--ca"])
        .arg(ca.ca_cert())
        .arg("--crl")
        .arg(ca.crl())
        .arg(&kept));
}

#[test]
fn cert_inspect_shows_what_openssl_sees_and_the_crl_export_reads_back_in_both_encodings() {
    let ca = CliCa::init();
    let (_, cert) = ca.node(3);
    let shown = ok(trust_proxy().args(["cert", "inspect"]).arg(&cert));
    let serial = ok(openssl()
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&cert));
    let serial = serial.trim().trim_start_matches("serial=").to_lowercase();
    assert!(shown.contains(&serial), "serial {serial} not in:\n{shown}");
    assert!(shown.contains("key:         2048 bits"), "{shown}");
    assert!(shown.contains("CA:          false"), "{shown}");
    assert!(shown.contains("SAN URI:     spiffe://"), "{shown}");
    assert!(shown.contains("/node/3"), "{shown}");

    let dir = tempfile::tempdir().unwrap();
    for (der, name) in [(false, "crl.pem"), (true, "crl.der")] {
        let out = dir.path().join(name);
        let mut cmd = trust_proxy();
        cmd.args(["ca", "crl", "--state-dir"])
            .arg(ca.state())
            .arg("--out")
            .arg(&out);
        if der {
            cmd.arg("--der");
        }
        ok(&mut cmd);
        let read = run(openssl()
            .args(["crl", "-noout", "-CAfile"])
            .arg(ca.ca_cert())
            .args(["-inform", if der { "DER" } else { "PEM" }, "-in"])
            .arg(&out));
        assert!(
            read.status.success() && text(&read).contains("verify OK"),
            "{name}: {}",
            text(&read)
        );
    }
    // A garbage file is refused with a message naming it.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let refused = run(trust_proxy().args(["cert", "inspect"]).arg(&garbage));
    assert!(!refused.status.success());
    assert!(text(&refused).contains("garbage.pem"), "{}", text(&refused));
}
