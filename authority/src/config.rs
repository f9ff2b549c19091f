//! The authority's settings, validated once at start-up; a bad value names its field.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use trust_core::{NamePolicy, TrustDomain};

use crate::error::{Error, Result};

/// Shortest bootstrap token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret string: compared in constant time, never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Constant-time equality with `other`.
    pub fn matches(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.len() == other.len() && bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything the authority needs to start.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// The CA folder and the registry log.
    pub state_dir: PathBuf,
    /// Trust domain for a root created at first start (an existing root's own wins).
    pub trust_domain: TrustDomain,
    /// Common name for a root created at first start.
    pub ca_name: String,
    /// The token nodes present to enroll.
    pub bootstrap_token: Secret,
    /// DNS names and IPs granted in node certificates.
    pub names: NamePolicy,
    /// How long each published CRL is valid; it is re-published at half that.
    pub crl_validity: Duration,
    /// Longest a `GET /trust/crl?wait=` may wait for the next CRL.
    pub max_long_poll: Duration,
    /// Largest request body accepted.
    pub max_body: usize,
    /// The id `/trust/status` reports for the authority itself.
    pub node_id: String,
    /// Lifetime of the node certificates issued (1 year; shorter for short-lived
    /// certificates, which sidecars renew at two thirds of their life).
    pub node_validity: Duration,
}

impl AuthorityConfig {
    /// Defaults for everything but the state directory and the token.
    pub fn new(state_dir: PathBuf, bootstrap_token: Secret) -> Self {
        Self {
            state_dir,
            trust_domain: "sovereign.local"
                .parse()
                .unwrap_or_else(|_| unreachable!("a valid literal")),
            ca_name: "Sovereign Trust Root CA".into(),
            bootstrap_token,
            names: NamePolicy::loopback(),
            crl_validity: Duration::from_secs(24 * 3600),
            max_long_poll: Duration::from_secs(60),
            max_body: 64 * 1024,
            node_id: "authority".into(),
            node_validity: trust_core::ca::LEAF_VALIDITY,
        }
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_token.0.len() < MIN_TOKEN_LEN {
            return Err(Error::Config(format!(
                "bootstrap_token: at least {MIN_TOKEN_LEN} characters are required (use e.g. `openssl rand -hex 32`)"
            )));
        }
        // Short validities exist for tests of staleness; production uses hours.
        if self.crl_validity < Duration::from_secs(10) {
            return Err(Error::Config("crl_validity: at least 10 seconds".into()));
        }
        if self.max_long_poll > Duration::from_secs(300) || self.max_long_poll.is_zero() {
            return Err(Error::Config("max_long_poll: between 1 s and 300 s".into()));
        }
        if self.node_validity < Duration::from_secs(10)
            || self.node_validity > trust_core::ca::LEAF_VALIDITY
        {
            return Err(Error::Config(
                "node_validity: between 10 s and 365 days".into(),
            ));
        }
        if self.max_body < 4096 {
            return Err(Error::Config(
                "max_body: at least 4096 bytes (a CSR is ~1 KiB)".into(),
            ));
        }
        Ok(())
    }
}
