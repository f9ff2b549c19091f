//! `trust-proxy policy check|test` with the real plugins: every shipped set passes its
//! fixtures in `policies/tests/`; a wrong expectation exits 1; a broken set exits 65.

use crate::support::{repo_root, run, text, trust_proxy};

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
