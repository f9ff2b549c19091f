//! The command line fails with one clear line and an exit code that means something.

use crate::support::{CliCa, ok, run, text, trust_proxy};

#[test]
fn help_teaches_and_exits_zero() {
    let out = run(trust_proxy().arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains("Exit codes:"));
    let out = run(trust_proxy().args(["ca", "issue", "--help"]));
    assert!(text(&out).contains("Example:"), "{}", text(&out));
}

#[test]
fn a_bad_argument_exits_64_and_names_it() {
    let out = run(trust_proxy().args([
        "ca",
        "init",
        "--trust-domain",
        "Not A Domain",
        "--state-dir",
        "/nonexistent/x",
    ]));
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(text(&out).contains("--trust-domain"), "{}", text(&out));
    let out = run(trust_proxy().args(["cert", "verify"]));
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

#[test]
fn missing_and_unusable_inputs_exit_66_and_65() {
    let ca = CliCa::init();
    let out = run(trust_proxy().args([
        "cert",
        "verify",
        "--ca",
        "/nonexistent/ca.pem",
        "--crl",
        "/nonexistent/crl.pem",
        "/nonexistent/c.pem",
    ]));
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent/ca.pem"));
    let junk = ca.path("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    let out = run(trust_proxy()
        .args(["cert", "verify", "--crl"])
        .arg(ca.crl())
        .arg("--ca")
        .arg(&junk)
        .arg(&junk));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).lines().count() == 1, "one line: {}", text(&out));
}

#[test]
fn outputs_are_never_overwritten_and_a_second_init_is_refused() {
    let ca = CliCa::init();
    let out = run(trust_proxy()
        .args(["ca", "init", "--state-dir"])
        .arg(ca.state()));
    assert_eq!(out.status.code(), Some(73), "{}", text(&out));
    let key = ca.path("k.pem");
    ok(trust_proxy().args(["key", "generate", "--out"]).arg(&key));
    let out = run(trust_proxy().args(["key", "generate", "--out"]).arg(&key));
    assert_eq!(out.status.code(), Some(73), "{}", text(&out));
}

#[test]
fn an_unopened_state_dir_says_how_to_create_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(trust_proxy()
        .args(["ca", "crl", "--state-dir"])
        .arg(tmp.path()));
    assert_eq!(out.status.code(), Some(66), "{}", text(&out));
    assert!(text(&out).contains("trust-proxy ca init"), "{}", text(&out));
}

#[test]
fn an_existing_root_can_be_imported_and_a_mismatched_pair_is_refused() {
    let a = CliCa::init();
    let b = CliCa::init();
    let into = a.path("imported");
    ok(trust_proxy()
        .args(["ca", "import", "--state-dir"])
        .arg(&into)
        .arg("--cert")
        .arg(a.ca_cert())
        .arg("--key")
        .arg(a.state().join("ca-key.pem")));
    assert_eq!(
        std::fs::read(into.join("ca-cert.pem")).unwrap(),
        std::fs::read(a.ca_cert()).unwrap()
    );
    let out = run(trust_proxy()
        .args(["ca", "import", "--state-dir"])
        .arg(a.path("mismatch"))
        .arg("--cert")
        .arg(a.ca_cert())
        .arg("--key")
        .arg(b.state().join("ca-key.pem")));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("does not match"), "{}", text(&out));
}

#[test]
fn probe_exits_0_on_2xx_1_on_another_answer_69_when_nothing_answers_and_64_on_https() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "probe-test-token-0123456789").unwrap();
    let authority = crate::support::AuthorityProcess::start(&tmp.path().join("ca"), &token);
    let code = |url: &str, extra: &[&str]| {
        run(trust_proxy().arg("probe").args(extra).arg(url))
            .status
            .code()
    };
    assert_eq!(code(&format!("{}/healthz", authority.url), &[]), Some(0));
    assert_eq!(
        code(&format!("{}/no-such-route", authority.url), &[]),
        Some(1)
    );
    // A port nothing listens on: taken, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(code(&format!("http://{closed}/healthz"), &[]), Some(69));
    assert_eq!(
        code(&format!("http://{closed}/healthz"), &["--wait", "1s"]),
        Some(69),
        "retries, then gives up"
    );
    assert_eq!(code("https://127.0.0.1:1/healthz", &[]), Some(64));
}

#[test]
fn under_json_logs_the_fatal_line_is_json_too_and_names_the_line_of_a_toml_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("sidecar.toml");
    std::fs::write(&broken, "state_dir = \"/tmp/x\"\nnames = [\"a\",\n").unwrap();
    let missing = dir.path().join("missing.toml");
    for (config, code, needle) in [
        (&missing, 66, "missing.toml"),
        (&broken, 64, "line 2, column 14"),
    ] {
        let out = run(trust_proxy()
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env_remove("TRUST_PROXY_CONFIG"));
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let fatal = lines.last().expect("a fatal line");
        assert_eq!(fatal["level"], "ERROR", "{fatal}");
        assert_eq!(fatal["fields"]["exit_code"], code, "{fatal}");
        let error = fatal["fields"]["error"].as_str().unwrap();
        assert!(error.contains(needle), "{error}");
    }
    // In text mode the fatal line stays one plain line, prefixed with the program's name.
    let out = run(trust_proxy()
        .args(["run", "--config"])
        .arg(&missing)
        .env_remove("TRUST_PROXY_CONFIG"));
    assert!(
        text(&out).contains("trust-proxy: cannot read"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_reader_that_stops_reading_ends_a_command_quietly_not_with_a_panic() {
    // `trust-proxy cert inspect cert.pem | head -0`, made deterministic: the pipe's
    // reading end is closed before the command writes a byte.
    let ca = CliCa::init();
    let (_key, cert) = ca.node(7);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = trust_proxy()
        .args(["cert", "inspect"])
        .arg(&cert)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // With a reader, the same command prints the certificate.
    let shown = ok(trust_proxy().args(["cert", "inspect"]).arg(&cert));
    assert!(shown.contains("node"), "{shown}");
}

#[test]
fn a_token_file_others_can_change_is_refused_and_one_they_can_read_is_warned_about() {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "mode-test-token-0123456789abcdef\n").unwrap();
    let authority = |state: &str| {
        let mut cmd = trust_proxy();
        cmd.args(["authority", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(tmp.path().join(state))
            .arg("--bootstrap-token-file")
            .arg(&token);
        cmd
    };
    let set_mode =
        |mode| std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();

    set_mode(0o666);
    let out = run(&mut authority("a"));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("chmod o-w"), "{}", text(&out));
    set_mode(0o600);
    std::fs::write(&token, "\n").unwrap();
    let out = run(&mut authority("b"));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(text(&out).contains("is empty"), "{}", text(&out));

    // Readable by others: it serves, and says so once on stderr.
    std::fs::write(&token, "mode-test-token-0123456789abcdef\n").unwrap();
    set_mode(0o644);
    let log = tmp.path().join("stderr");
    let mut child = authority("c")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on "), "{line:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("readable by every user") && logged.contains("mode=644"),
        "{logged}"
    );
}
