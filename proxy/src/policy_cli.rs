//! `trust-proxy policy check` and `trust-proxy policy test`: what a reload would do, and
//! request fixtures with expected decisions, so policies get unit tests in CI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use policy_host::chain::NoObserver;
use policy_host::seen::SeenStore;
use policy_host::{Decision, Peer, PolicyHost, Request, SignatureFacts};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::out::out;
use request_path::canonical_path;

/// `trust-proxy policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy set exactly as a reload would (read, compile, check the world, probe)
    /// and list its plugins; exit 65 with the reason if it would be refused.
    #[command(
        after_help = "Example:\n  trust-proxy policy check --set policies/node.toml --plugin-dir target/plugins/wasm32-wasip2/release"
    )]
    Check(PolicySetArgs),
    /// Run request fixtures through a policy set and compare the decisions; exit 1 on any
    /// mismatch. Cases run in order against one seen-before store, so a replay case can
    /// follow the request it replays.
    #[command(after_help = POLICY_TEST_HELP)]
    Test {
        #[command(flatten)]
        #[allow(missing_docs, reason = "flattened group documents itself")]
        set: PolicySetArgs,
        /// The fixtures (TOML, `[[case]]` entries).
        #[arg(long)]
        cases: PathBuf,
    },
}

const POLICY_TEST_HELP: &str = "\
Example:
  trust-proxy policy test --set policies/authority.toml \\
    --plugin-dir target/plugins/wasm32-wasip2/release --cases policies/tests/authority.toml

A case:
  [[case]]
  name = \"a node cannot revoke, however the path is spelled\"
  method = \"POST\"                  # default GET
  path = \"/trust/%72evoke/3\"       # as sent; normalised as the ingress does
  roles = [\"node\"]                 # the peer's roles; omit for an anonymous client
  peer_id = \"3\"                    # default 1
  signature = { node = \"3\", timestamp = \"now-10\", nonce = \"n1\" }   # optional
  expect = \"deny\"                  # allow | deny
  status = 403                     # optional, checked when given";

/// A policy set and where its plugins are.
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The policy-set file.
    #[arg(long)]
    pub set: PathBuf,
    /// The folder with the plugins' .wasm files.
    #[arg(long, default_value = "target/plugins/wasm32-wasip2/release")]
    pub plugin_dir: PathBuf,
    /// Keep the compiled plugins in this folder (writable by its owner only) and take them
    /// from it: run `policy check` with it when a container image is built, and point the
    /// sidecar's `policy.compile_cache` at it, so no container compiles them again.
    #[arg(long, value_name = "DIR")]
    pub compile_cache: Option<PathBuf>,
}

/// Dispatch.
pub fn run(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Check(args) => {
            let host = load(&args)?;
            out!("{}: loads; plugins in order:", args.set.display());
            for p in host.plugins() {
                out!("  {p}");
            }
            if let Some((hits, misses)) = host.compile_cache_counts() {
                out!("compile cache: {hits} taken from it, {misses} compiled into it");
            }
            Ok(())
        }
        PolicyCommand::Test { set, cases } => test(&set, &cases),
    }
}

fn load(args: &PolicySetArgs) -> Result<PolicyHost> {
    let seen = Arc::new(SeenStore::new(1_000_000));
    match &args.compile_cache {
        Some(dir) => PolicyHost::with_compile_cache(
            &args.set,
            &args.plugin_dir,
            seen,
            Arc::new(NoObserver),
            dir,
        ),
        None => PolicyHost::new(&args.set, &args.plugin_dir, seen, Arc::new(NoObserver)),
    }
    .map_err(|e| Error::BadInput {
        path: args.set.clone(),
        detail: e.to_string(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default = "one")]
    peer_id: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    signature: Option<CaseSignature>,
    expect: String,
    #[serde(default)]
    status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSignature {
    node: String,
    /// Unix seconds, or `now`, `now-N`, `now+N`.
    timestamp: toml::Value,
    nonce: String,
}

fn get() -> String {
    "GET".into()
}

fn one() -> String {
    "1".into()
}

fn timestamp(value: &toml::Value, now: u64) -> Option<u64> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let rest = s.strip_prefix("now")?;
            if rest.is_empty() {
                Some(now)
            } else if let Some(n) = rest.strip_prefix('-') {
                now.checked_sub(n.parse().ok()?)
            } else {
                now.checked_add(rest.strip_prefix('+')?.parse().ok()?)
            }
        }
        _ => None,
    }
}

fn test(args: &PolicySetArgs, cases_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(cases_path).map_err(Error::no_input(cases_path))?;
    let cases: Cases = toml::from_str(&text).map_err(|e| Error::BadInput {
        path: cases_path.to_owned(),
        detail: e.to_string().trim_end().to_owned(),
    })?;
    if cases.case.is_empty() {
        return Err(Error::BadInput {
            path: cases_path.to_owned(),
            detail: "no [[case]] entries".into(),
        });
    }
    let host = load(args)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut failed = 0;
    for (i, case) in cases.case.iter().enumerate() {
        let bad = |detail: String| Error::BadInput {
            path: cases_path.to_owned(),
            detail: format!("case[{i}] ({}): {detail}", case.name),
        };
        let want_allow = match case.expect.as_str() {
            "allow" => true,
            "deny" => false,
            other => return Err(bad(format!("expect is `allow` or `deny`, not `{other}`"))),
        };
        let signature = match &case.signature {
            None => None,
            Some(s) => Some(SignatureFacts {
                node: s.node.clone(),
                timestamp: timestamp(&s.timestamp, now_ms / 1000).ok_or_else(|| {
                    bad(
                        "signature.timestamp: unix seconds, or \"now\", \"now-N\", \"now+N\""
                            .into(),
                    )
                })?,
                nonce: s.nonce.clone(),
            }),
        };
        // What the ingress would do before the policy: the canonical path, or 400.
        let (allowed, status, detail) =
            match canonical_path(case.path.split('?').next().unwrap_or("")) {
                Err(why) => (
                    false,
                    400,
                    format!("refused by the ingress before any policy ({why})"),
                ),
                Ok(path) => {
                    let request = Request {
                        method: case.method.to_ascii_uppercase(),
                        path: path.into_owned(),
                        query: case.path.split_once('?').map(|(_, q)| q.to_owned()),
                        headers: case
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                            .collect(),
                        peer: case.roles.as_ref().map(|roles| Peer {
                            spiffe_id: format!("spiffe://policy-test/node/{}", case.peer_id),
                            id: case.peer_id.clone(),
                            roles: roles.clone(),
                            serial: "01".into(),
                            not_after: u64::MAX,
                        }),
                        signature,
                        received_at_ms: now_ms,
                    };
                    let verdict = host.evaluate(&request);
                    match verdict.decision {
                        Decision::Allow => (true, 200, "allowed".to_owned()),
                        Decision::Deny(d) => (
                            false,
                            d.status,
                            format!("denied by {}: {}", verdict.by.unwrap_or_default(), d.reason),
                        ),
                    }
                }
            };
        let ok = allowed == want_allow && case.status.is_none_or(|s| s == status);
        out!(
            "{} {} ({} {}): {detail}",
            if ok { "PASS" } else { "FAIL" },
            case.name,
            case.method,
            case.path
        );
        if !ok {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Error::Refused(format!(
            "{failed} of {} cases did not get the expected decision",
            cases.case.len()
        )));
    }
    out!("all {} cases passed", cases.case.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn fixture_timestamps_are_absolute_or_relative_to_now() {
        let now = 1_000;
        assert_eq!(timestamp(&toml::Value::Integer(5), now), Some(5));
        assert_eq!(
            timestamp(&toml::Value::String("now".into()), now),
            Some(1_000)
        );
        assert_eq!(
            timestamp(&toml::Value::String("now-600".into()), now),
            Some(400)
        );
        assert_eq!(
            timestamp(&toml::Value::String("now+30".into()), now),
            Some(1_030)
        );
        assert_eq!(timestamp(&toml::Value::String("then".into()), now), None);
    }
}
