//! The sidecar's configuration: one TOML file, every field overridable from the
//! environment, validated once at start-up with an error that names the field.
//!
//! Environment overrides are `TRUST_PROXY_<FIELD>` for top-level fields and
//! `TRUST_PROXY_<SECTION>_<FIELD>` inside a section, e.g. `TRUST_PROXY_INGRESS_LISTEN` or
//! `TRUST_PROXY_AUTHORITY_URL`. A value is read as a TOML value when it parses as one
//! (`3`, `true`, `["/fl/", "/admin/"]`) and as a string otherwise (`0.0.0.0:8443`).
//! `TRUST_PROXY_CONFIG` and `TRUST_PROXY_LOG*` are the command line's own and are not fields.
//!
//! See `docs/examples/sidecar.toml` for a commented file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SidecarError as Error};

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "TRUST_PROXY_";
/// Variables with the prefix that belong to the command line, not to the file.
const NOT_FIELDS: [&str; 3] = ["CONFIG", "LOG", "LOG_FORMAT"];
const SECTIONS: [&str; 7] = [
    "authority",
    "ingress",
    "egress",
    "admin",
    "rotation",
    "limits",
    "policy",
];

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Where the node key (0600), certificate and CA certificate live.
    pub state_dir: PathBuf,
    /// An id to ask for at enrolment (the authority assigns the next free one otherwise).
    #[serde(default)]
    pub node_id: Option<u32>,
    /// What this node is in the network (`agent`, `aggregator`, ...: 1 to 32 of `a-z`,
    /// `0-9`, `-`). Declared to the authority with every CRL poll, with the host name,
    /// for its live and by-role counts; a label, not a certified claim.
    #[serde(default)]
    pub role: Option<String>,
    /// DNS names and IP addresses to ask for in the certificate; peers reach this node by
    /// them, and signed requests must name one of them as their destination.
    pub names: Vec<String>,
    /// The trust authority.
    pub authority: AuthoritySection,
    /// The inbound mTLS listener in front of the app.
    pub ingress: IngressSection,
    /// The outbound forward proxy the app reaches through `HTTP_PROXY`.
    #[serde(default)]
    pub egress: Option<EgressSection>,
    /// Metrics, liveness and readiness.
    #[serde(default)]
    pub admin: AdminSection,
    /// Automatic certificate renewal.
    #[serde(default)]
    pub rotation: RotationSection,
    /// Connection and timing limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The Wasm policy chain; without it every request the native checks admit is admitted.
    #[serde(default)]
    pub policy: Option<PolicySection>,
    /// Time in-flight requests get to finish after SIGTERM.
    #[serde(default = "defaults::grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// `[authority]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySection {
    /// Base URL, e.g. `http://127.0.0.1:7000`.
    pub url: String,
    /// File holding the bootstrap token (needed only to enroll).
    #[serde(default)]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The token itself (prefer the file; the environment is visible to the process tree).
    #[serde(default)]
    pub bootstrap_token: Option<String>,
    /// SHA-256 of the root certificate's DER, hex (colons allowed): the CA certificate the
    /// authority hands out must match it.
    #[serde(default)]
    pub ca_fingerprint: Option<String>,
    /// How long each CRL long poll may wait at the authority.
    #[serde(default = "defaults::crl_wait", with = "humantime_serde")]
    pub crl_wait: Duration,
}

/// `[ingress]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSection {
    /// Address of the mTLS listener.
    pub listen: SocketAddr,
    /// The local app (plain HTTP).
    pub upstream: SocketAddr,
    /// Route prefixes where a message signature is required. Matched segment-wise on the
    /// request's canonical path: `/fl` (or `/fl/`) covers `/fl`, `/fl/` and `/fl/update`,
    /// not `/flx`.
    #[serde(default)]
    pub signed_prefixes: Vec<String>,
    /// Route prefixes a client without a certificate may reach (the policy chain decides),
    /// matched like `signed_prefixes`.
    #[serde(default)]
    pub anonymous_prefixes: Vec<String>,
    /// Extra `host[:port]` names signed requests may name as their destination (the
    /// node's `names` and `node-<id>` always count).
    #[serde(default)]
    pub local_authorities: Vec<String>,
    /// Largest request body, in bytes (bodies are buffered to digest them).
    #[serde(default = "defaults::max_body")]
    pub max_body_bytes: usize,
}

impl AuthoritySection {
    /// The authority at `url`, every other field its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bootstrap_token_file: None,
            bootstrap_token: None,
            ca_fingerprint: None,
            crl_wait: defaults::crl_wait(),
        }
    }
}

impl IngressSection {
    /// Listening on `listen` in front of the app at `upstream`, every other field its
    /// default.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            listen,
            upstream,
            signed_prefixes: Vec::new(),
            anonymous_prefixes: Vec::new(),
            local_authorities: Vec::new(),
            max_body_bytes: defaults::max_body(),
        }
    }

    /// `signed_prefixes` in canonical form; a prefix with none is a config error naming it.
    pub fn signed_route_prefixes(&self) -> Result<Vec<request_path::RoutePrefix>> {
        route_prefixes("ingress.signed_prefixes", &self.signed_prefixes)
    }

    /// `anonymous_prefixes` in canonical form, likewise.
    pub fn anonymous_route_prefixes(&self) -> Result<Vec<request_path::RoutePrefix>> {
        route_prefixes("ingress.anonymous_prefixes", &self.anonymous_prefixes)
    }
}

fn route_prefixes(field: &str, prefixes: &[String]) -> Result<Vec<request_path::RoutePrefix>> {
    prefixes
        .iter()
        .map(|p| {
            request_path::RoutePrefix::new(p).map_err(|e| {
                Error::Config(format!(
                    "config `{field}`: `{p}` is not a route prefix ({e}); write an absolute path such as `/fl/`"
                ))
            })
        })
        .collect()
}

/// `[egress]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSection {
    /// Address of the forward proxy; loopback only (the app's plain HTTP must not leave
    /// the host).
    pub listen: SocketAddr,
    /// Peers by the host name the app uses.
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
    /// For a host not in `peers`: connect to `<host>:<this port>` and require the peer's
    /// certificate to carry that host as a DNS name. Unset: unknown hosts are refused.
    #[serde(default)]
    pub default_peer_port: Option<u16>,
    /// Largest request body the app may send, in bytes.
    #[serde(default = "defaults::max_body")]
    pub max_body_bytes: usize,
}

impl EgressSection {
    /// Listening on `listen` with no peers, every other field its default.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            peers: Vec::new(),
            default_peer_port: None,
            max_body_bytes: defaults::max_body(),
        }
    }
}

/// One `[[egress.peers]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The host name the app puts in its URLs (`http://<name>/...`).
    pub name: String,
    /// The peer sidecar's TLS address.
    pub address: String,
    /// The node id its certificate must carry (`spiffe://<domain>/node/<id>`). Without it
    /// the certificate must carry `name` as a DNS name.
    #[serde(default)]
    pub node_id: Option<u32>,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// The policy-set file (`policies/<name>.toml`); its folder is watched.
    pub set: PathBuf,
    /// Where the plugins' `.wasm` files are; watched too.
    pub plugin_dir: PathBuf,
    /// A candidate set evaluated beside the enforcing one and never enforced; where it
    /// decides otherwise, a log line and a metric say so. Watched and reloaded the same way.
    #[serde(default)]
    pub shadow_set: Option<PathBuf>,
    /// Keys the shared seen-before store holds at most (replay nonces); when full, new
    /// keys are refused rather than old ones forgotten.
    #[serde(default = "defaults::seen_capacity")]
    pub seen_capacity: u64,
    /// Quiet time after a change in the watched folders before the set is reloaded.
    #[serde(default = "defaults::debounce", with = "humantime_serde")]
    pub reload_debounce: Duration,
    /// A folder of compiled plugins to take them from (and keep them in): filled when a
    /// container image is built (`trust-proxy policy check --compile-cache`), it spares
    /// every container the compilation. Must be writable by its owner only.
    #[serde(default)]
    pub compile_cache: Option<PathBuf>,
}

impl PolicySection {
    /// The set `set` with plugins from `plugin_dir`, every other field its default.
    pub fn new(set: PathBuf, plugin_dir: PathBuf) -> Self {
        Self {
            set,
            plugin_dir,
            shadow_set: None,
            seen_capacity: defaults::seen_capacity(),
            reload_debounce: defaults::debounce(),
            compile_cache: None,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `/metrics`, `/healthz`, `/readyz`; loopback by default.
    #[serde(default = "defaults::admin")]
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: defaults::admin(),
        }
    }
}

/// `[rotation]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSection {
    /// Fraction of the certificate's life after which it is renewed.
    #[serde(default = "defaults::renew_at")]
    pub renew_at: f64,
    /// How often the certificate file and the renewal time are checked.
    #[serde(default = "defaults::check_every", with = "humantime_serde")]
    pub check_every: Duration,
}

impl Default for RotationSection {
    fn default() -> Self {
        Self {
            renew_at: defaults::renew_at(),
            check_every: defaults::check_every(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Open inbound connections at most; further ones wait in the kernel's backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Time a client gets to finish the TLS handshake.
    #[serde(default = "defaults::handshake", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time a client gets to send a request's headers.
    #[serde(default = "defaults::header_read", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client gets to send a body the sidecar must read whole (to check its digest
    /// against a signature), from the end of the headers.
    #[serde(default = "defaults::body_read", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Time the app (or a peer, for egress) gets to answer.
    #[serde(default = "defaults::upstream", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    #[serde(default = "defaults::max_header")]
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    #[serde(default = "defaults::h2_streams")]
    pub http2_max_streams: u32,
    /// Ingress threads, each with its own event loop (default: one per CPU).
    #[serde(default = "defaults::worker_threads")]
    pub worker_threads: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_connections: defaults::max_connections(),
            handshake_timeout: defaults::handshake(),
            header_read_timeout: defaults::header_read(),
            body_read_timeout: defaults::body_read(),
            upstream_timeout: defaults::upstream(),
            max_header_bytes: defaults::max_header(),
            http2_max_streams: defaults::h2_streams(),
            worker_threads: defaults::worker_threads(),
        }
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub fn grace() -> Duration {
        Duration::from_secs(25)
    }
    pub fn crl_wait() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_body() -> usize {
        8 * 1024 * 1024
    }
    pub fn admin() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9100))
    }
    pub fn renew_at() -> f64 {
        2.0 / 3.0
    }
    pub fn check_every() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connections() -> usize {
        4096
    }
    pub fn handshake() -> Duration {
        Duration::from_secs(10)
    }
    pub fn header_read() -> Duration {
        Duration::from_secs(10)
    }
    pub fn body_read() -> Duration {
        Duration::from_secs(30)
    }
    pub fn upstream() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header() -> usize {
        64 * 1024
    }
    pub fn h2_streams() -> u32 {
        256
    }
    pub fn seen_capacity() -> u64 {
        1_000_000
    }
    pub fn debounce() -> Duration {
        Duration::from_millis(100)
    }
    pub fn worker_threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// `humantime` durations (`"30s"`, `"5m"`) in serde.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. \"30s\" or \"5m\""
            ))
        })
    }
}

impl SidecarConfig {
    /// A config for node state in `state_dir`, answering to `names`, enrolling with the
    /// authority at `authority_url`, in front of the app described by `ingress`; every
    /// other section its default (no egress, no policy).
    pub fn new(
        state_dir: PathBuf,
        names: Vec<String>,
        authority_url: impl Into<String>,
        ingress: IngressSection,
    ) -> Self {
        Self {
            state_dir,
            node_id: None,
            role: None,
            names,
            authority: AuthoritySection::new(authority_url),
            ingress,
            egress: None,
            admin: AdminSection::default(),
            rotation: RotationSection::default(),
            limits: LimitsSection::default(),
            policy: None,
            shutdown_grace: defaults::grace(),
        }
    }

    /// The config as TOML, as [`Self::load`] reads it back.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self)
            .map_err(|e| Error::Service(format!("cannot write the sidecar config as TOML: {e}")))
    }

    /// Reads `path`, applies `env` overrides (`(name, value)` pairs, normally
    /// `std::env::vars()`), and validates.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::no_input(path))?;
        // toml's own Display names the line and column and shows the line with a caret.
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::Config(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let applied = apply_env(&mut table, env)?;
        // serde_path_to_error names the field a bad value sits in (`ingress.listen`).
        let config: SidecarConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let from_env = if applied.is_empty() {
                    String::new()
                } else {
                    format!(" (environment overrides applied: {})", applied.join(", "))
                };
                let field = e.path().to_string();
                let inner = e.into_inner();
                Error::Config(format!(
                    "{}: config `{field}`: {}{from_env}",
                    path.display(),
                    inner.message()
                ))
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("config `{field}`: {why}")));
        if let Some(role) = &self.role
            && !trust_api::valid_role(role)
        {
            return bad("role", "1 to 32 of a-z, 0-9 and - (e.g. agent, aggregator)");
        }
        if self.names.is_empty() {
            return bad(
                "names",
                "give at least one DNS name or IP peers reach this node by",
            );
        }
        if !(self.authority.url.starts_with("http://")
            || self.authority.url.starts_with("https://"))
        {
            return bad("authority.url", "must start with http:// or https://");
        }
        if self.authority.url.starts_with("https://") {
            return bad(
                "authority.url",
                "https is not supported yet: reach the authority over a private network or loopback (http://)",
            );
        }
        if let Some(fp) = &self.authority.ca_fingerprint
            && parse_fingerprint(fp).is_none()
        {
            return bad(
                "authority.ca_fingerprint",
                "the SHA-256 of the CA certificate's DER: 64 hex digits (colons allowed) or the base64url form `trust-proxy cert inspect` prints",
            );
        }
        if self.authority.crl_wait.is_zero() || self.authority.crl_wait > Duration::from_secs(300) {
            return bad("authority.crl_wait", "between 1 s and 300 s");
        }
        self.ingress.signed_route_prefixes()?;
        self.ingress.anonymous_route_prefixes()?;
        if self.ingress.max_body_bytes == 0 {
            return bad("ingress.max_body_bytes", "must be at least 1");
        }
        if let Some(egress) = &self.egress {
            if !egress.listen.ip().is_loopback() {
                return bad(
                    "egress.listen",
                    "must be a loopback address: the app's unsigned traffic must not leave the host",
                );
            }
            for (i, peer) in egress.peers.iter().enumerate() {
                if peer.name.is_empty() || peer.name.contains([':', '/']) {
                    return bad(
                        &format!("egress.peers[{i}].name"),
                        "a bare host name, e.g. \"aggregator\"",
                    );
                }
                if split_host_port(&peer.address).is_none() {
                    return bad(
                        &format!("egress.peers[{i}].address"),
                        "host:port of the peer's sidecar, e.g. \"10.0.0.7:8443\"",
                    );
                }
            }
        }
        if !(0.1..=0.95).contains(&self.rotation.renew_at) {
            return bad("rotation.renew_at", "a fraction between 0.1 and 0.95");
        }
        if self.rotation.check_every.is_zero() {
            return bad("rotation.check_every", "must be positive");
        }
        if self.limits.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if let Some(policy) = &self.policy {
            if !policy.set.is_file() {
                return bad(
                    "policy.set",
                    &format!("{} is not a file", policy.set.display()),
                );
            }
            if !policy.plugin_dir.is_dir() {
                return bad(
                    "policy.plugin_dir",
                    &format!("{} is not a folder", policy.plugin_dir.display()),
                );
            }
            if let Some(shadow) = &policy.shadow_set
                && !shadow.is_file()
            {
                return bad(
                    "policy.shadow_set",
                    &format!("{} is not a file", shadow.display()),
                );
            }
            if policy.seen_capacity == 0 {
                return bad("policy.seen_capacity", "must be at least 1");
            }
            if policy.reload_debounce > Duration::from_secs(10) {
                return bad("policy.reload_debounce", "at most 10 s");
            }
        }
        if self.limits.max_header_bytes < 8192 {
            return bad("limits.max_header_bytes", "at least 8192");
        }
        if self.limits.worker_threads == 0 || self.limits.worker_threads > 256 {
            return bad("limits.worker_threads", "between 1 and 256");
        }
        if self.limits.http2_max_streams == 0 {
            return bad("limits.http2_max_streams", "must be at least 1");
        }
        for (field, value) in [
            ("limits.handshake_timeout", self.limits.handshake_timeout),
            (
                "limits.header_read_timeout",
                self.limits.header_read_timeout,
            ),
            ("limits.body_read_timeout", self.limits.body_read_timeout),
            ("limits.upstream_timeout", self.limits.upstream_timeout),
        ] {
            if value.is_zero() {
                return bad(field, "must be positive");
            }
        }
        Ok(())
    }

    /// The bootstrap token, from the file or the setting.
    pub fn bootstrap_token(&self) -> Result<Option<String>> {
        match (
            &self.authority.bootstrap_token_file,
            &self.authority.bootstrap_token,
        ) {
            (Some(_), Some(_)) => Err(Error::Config(
                "config `authority.bootstrap_token`: give the token or a token file, not both"
                    .into(),
            )),
            (Some(path), None) => Ok(Some(trust_store::read_secret(path)?.text)),
            (None, token) => Ok(token.clone()),
        }
    }
}

/// A fingerprint setting as 32 bytes: hex (colons allowed, as `sha256sum` or openssl print
/// it) or the base64url form `trust-proxy cert inspect` prints.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if let Some(fp) = trust_core::Fingerprint::from_base64url(text) {
        return Some(fp.0);
    }
    let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

/// `host:port` with a numeric port.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Applies `TRUST_PROXY_*` overrides to `table`; returns the variables applied.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let key = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        if NOT_FIELDS.iter().any(|n| n.eq_ignore_ascii_case(&key)) {
            continue;
        }
        let value = parse_env_value(&raw);
        let (section, field) = match SECTIONS.iter().find(|s| key.starts_with(&format!("{s}_"))) {
            Some(s) => (Some(*s), key[s.len() + 1..].to_owned()),
            None => (None, key.clone()),
        };
        let target = match section {
            None => &mut *table,
            Some(s) => match table
                .entry(s)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(Error::Config(format!(
                        "{name}: `{s}` in the config file is not a section"
                    )));
                }
            },
        };
        target.insert(field, value);
        applied.push(name);
    }
    Ok(applied)
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_config_written_as_toml_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut ingress = IngressSection::new(
            "127.0.0.1:8443".parse().unwrap(),
            "127.0.0.1:5000".parse().unwrap(),
        );
        ingress.signed_prefixes = vec!["/fl/".into()];
        ingress.local_authorities = vec!["aggregator".into()];
        let mut c = SidecarConfig::new(
            dir.path().join("state"),
            vec!["localhost".into(), "127.0.0.1".into()],
            "http://127.0.0.1:7000",
            ingress,
        );
        c.node_id = Some(3);
        c.shutdown_grace = Duration::from_millis(5500);
        c.authority.bootstrap_token_file = Some(dir.path().join("token"));
        c.authority.ca_fingerprint = Some("ab".repeat(32));
        let mut egress = EgressSection::new("127.0.0.1:8080".parse().unwrap());
        egress.peers.push(PeerEntry {
            name: "aggregator".into(),
            address: "127.0.0.1:9443".into(),
            node_id: Some(1),
        });
        c.egress = Some(egress);
        c.policy = Some(PolicySection::new(
            dir.path().join("set.toml"),
            dir.path().join("plugins"),
        ));
        std::fs::write(dir.path().join("set.toml"), "").unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let file = dir.path().join("sidecar.toml");
        std::fs::write(&file, c.to_toml().unwrap()).unwrap();
        let back = SidecarConfig::load(&file, std::iter::empty()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
    }

    const MINIMAL: &str = r#"
state_dir = "/tmp/x"
names = ["node-1", "127.0.0.1"]
[authority]
url = "http://127.0.0.1:7000"
[ingress]
listen = "127.0.0.1:8443"
upstream = "127.0.0.1:5000"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<SidecarConfig> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let path = dir.path().join("sidecar.toml");
        std::fs::write(&path, text).map_err(|e| Error::Config(e.to_string()))?;
        SidecarConfig::load(
            &path,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn message(r: Result<SidecarConfig>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9100");
        assert!((c.rotation.renew_at - 2.0 / 3.0).abs() < 1e-9);
        assert!(c.egress.is_none());
    }

    #[test]
    fn environment_overrides_fields_in_sections_and_at_the_top() {
        let c = load(
            MINIMAL,
            &[
                ("TRUST_PROXY_INGRESS_LISTEN", "127.0.0.1:9443"),
                ("TRUST_PROXY_NODE_ID", "7"),
                ("TRUST_PROXY_INGRESS_SIGNED_PREFIXES", r#"["/fl/"]"#),
                ("TRUST_PROXY_LIMITS_UPSTREAM_TIMEOUT", "5s"),
                ("TRUST_PROXY_CONFIG", "ignored"),
                ("OTHER", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.ingress.listen.port(), 9443);
        assert_eq!(c.node_id, Some(7));
        assert_eq!(c.ingress.signed_prefixes, ["/fl/"]);
        assert_eq!(c.limits.upstream_timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_toml_syntax_error_names_its_line_and_column() {
        // The last line of the file holds a string that never ends: toml points at the
        // end of that line, where the closing quote should be.
        let text = format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:9100\n",
            MINIMAL.trim_end()
        );
        let line = text.lines().count();
        let m = message(load(&text, &[]));
        let end = "listen = \"127.0.0.1:9100".chars().count() + 1;
        assert!(m.contains("sidecar.toml: "), "{m}");
        assert!(m.contains(&format!("line {line}, column {end}")), "{m}");
        assert!(
            m.contains("listen = \"127.0.0.1:9100"),
            "the line is shown: {m}"
        );
        // A column counts characters, not bytes.
        let m = message(load("names = [\"é\", ]]\n", &[]));
        assert!(m.contains("line 1, column 16"), "{m}");
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let m = message(load(&format!("{MINIMAL}\n[admin]\nlisen = \"x\"\n"), &[]));
        assert!(m.contains("lisen"), "{m}");
        let m = message(load(MINIMAL, &[("TRUST_PROXY_INGRES_LISTEN", "x")]));
        assert!(
            m.contains("ingres_listen") && m.contains("TRUST_PROXY_INGRES_LISTEN"),
            "{m}"
        );
        let m = message(load(MINIMAL, &[("TRUST_PROXY_INGRESS_LISTEN", "nowhere")]));
        assert!(m.contains("listen"), "{m}");
        let m = message(load(MINIMAL, &[("TRUST_PROXY_SHUTDOWN_GRACE", "soon")]));
        assert!(m.contains("soon") && m.contains("duration"), "{m}");
        let m = message(load(MINIMAL, &[("TRUST_PROXY_ROTATION_RENEW_AT", "1.5")]));
        assert!(m.contains("rotation.renew_at"), "{m}");
        let m = message(load(
            MINIMAL,
            &[("TRUST_PROXY_AUTHORITY_CA_FINGERPRINT", "abc")],
        ));
        assert!(m.contains("authority.ca_fingerprint"), "{m}");
        let m = message(load(
            &format!("{MINIMAL}\n[egress]\nlisten = \"0.0.0.0:8080\"\n"),
            &[],
        ));
        assert!(m.contains("egress.listen") && m.contains("loopback"), "{m}");
        let m = message(load(
            &format!(
                "{MINIMAL}\n[egress]\nlisten = \"127.0.0.1:8080\"\n[[egress.peers]]\nname = \"a\"\naddress = \"nope\"\n"
            ),
            &[],
        ));
        assert!(m.contains("egress.peers[0].address"), "{m}");
        let m = message(load("names = [\n", &[]));
        assert!(m.contains("sidecar.toml"), "{m}");
    }

    #[test]
    fn the_documented_example_is_a_valid_config() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/sidecar.toml");
        let c = SidecarConfig::load(Path::new(example), std::iter::empty()).unwrap();
        assert_eq!(c.node_id, Some(3));
        let egress = c.egress.unwrap();
        assert_eq!(egress.peers[0].node_id, Some(1));
        assert_eq!(egress.default_peer_port, Some(8443));
    }

    #[test]
    fn fingerprints_take_hex_with_or_without_colons() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&hex64), Some([0xab; 32]));
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons), Some([0xab; 32]));
        assert_eq!(parse_fingerprint("ab"), None);
    }

    #[test]
    fn fingerprints_also_take_what_cert_inspect_prints() {
        let der = b"any certificate bytes";
        let fp = trust_core::Fingerprint::of_der(der);
        assert_eq!(parse_fingerprint(&fp.to_string()), Some(fp.0));
        assert_eq!(parse_fingerprint(&hex::encode(fp.0)), Some(fp.0));
        // One character short, or not base64url: refused, never half-read.
        let text = fp.to_string();
        assert_eq!(parse_fingerprint(&text[1..]), None);
        assert_eq!(
            parse_fingerprint(&text.replace(|c: char| c.is_ascii_alphanumeric(), "*")),
            None
        );
    }
}
