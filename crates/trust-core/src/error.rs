//! The crate's one error type, and the two refusal enums whose `label()` is the
//! metric label and log reason (`tpm_signature_verification_failures_total{reason}` and the
//! certificate counterpart). Messages say what went wrong and what to do; none carries key
//! material.

use std::fmt;

/// Everything that can go wrong in `trust-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that should have been PEM or DER could not be decoded.
    #[error("{what} could not be decoded: {detail}")]
    Decode {
        /// What was being read, e.g. "CA certificate".
        what: &'static str,
        /// The decoder's complaint (never the input itself).
        detail: String,
    },
    /// The CA certificate and the CA key do not belong together.
    #[error(
        "the CA private key does not match the CA certificate; restore the matching pair from backup or initialise a new CA"
    )]
    CaKeyMismatch,
    /// A certificate given as the CA is not a usable CA.
    #[error("the CA certificate is not usable: {reason}")]
    NotACa {
        /// What is missing (e.g. `CA:TRUE`, keyCertSign).
        reason: &'static str,
    },
    /// The crypto backend refused to generate a key or sign.
    #[error("the crypto backend failed to {operation}")]
    Crypto {
        /// The operation, e.g. "generate an RSA-2048 key".
        operation: &'static str,
    },
    /// A CSR was refused.
    #[error("certificate request refused: {0}")]
    CsrRejected(CsrRejection),
    /// A certificate did not verify.
    #[error("certificate refused: {0}")]
    CertificateRejected(CertificateRejection),
    /// A CRL could not be installed.
    #[error("CRL refused: {0}")]
    CrlRejected(CrlRejection),
    /// A message signature did not verify.
    #[error("message signature refused: {0}")]
    SignatureRejected(SignatureRejection),
    /// A name (node id, admin name, trust domain, DNS name) is not well formed.
    #[error("invalid {what} {value:?}: {rule}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The offending value (names are public; never used for secrets).
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Why a certificate signing request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsrRejection {
    /// Not a DER/PEM CSR.
    Malformed(String),
    /// The CSR's own signature does not verify against the key it carries.
    BadSignature,
    /// Signed with an algorithm other than RSA PKCS#1 v1.5 with SHA-256/384/512.
    UnsupportedSignatureAlgorithm(String),
    /// The key is not RSA.
    UnsupportedKeyType(String),
    /// The key is too small (or absurdly large).
    KeySize {
        /// Bits in the modulus.
        bits: usize,
    },
    /// The RSA public exponent is not 65537 (a small exponent invites the classic
    /// signature-forgery attacks on lax verifiers; every common tool makes 65537).
    WeakExponent {
        /// The exponent (0 when it does not fit in 64 bits).
        exponent: u64,
    },
    /// A SAN outside the authority's allowed set, or of a kind the authority sets itself.
    SanNotAllowed(String),
}

impl fmt::Display for CsrRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(d) => write!(f, "not a valid PKCS#10 request ({d})"),
            Self::BadSignature => f.write_str(
                "its signature does not verify with the key it carries (altered, or signed by another key)",
            ),
            Self::UnsupportedSignatureAlgorithm(oid) => write!(
                f,
                "signature algorithm {oid} is not accepted; sign the CSR with sha256WithRSAEncryption"
            ),
            Self::UnsupportedKeyType(kind) => {
                write!(f, "the key is {kind}; only RSA keys of 2048 to 8192 bits are accepted")
            }
            Self::KeySize { bits } => write!(
                f,
                "the RSA key has {bits} bits; use 2048 to 8192 bits (trust-proxy generates 2048)"
            ),
            Self::WeakExponent { exponent } => write!(
                f,
                "the RSA public exponent is {exponent}; make the key with exponent 65537 (the default of openssl, Python and trust-proxy)"
            ),
            Self::SanNotAllowed(san) => write!(
                f,
                "it asks for {san}, which this authority does not grant; ask only for allowed DNS names and IPs"
            ),
        }
    }
}

/// Why a peer certificate was refused. [`CertificateRejection::label`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateRejection {
    /// Not a parseable X.509 certificate.
    Malformed,
    /// Not issued by this network's root (includes another root with the same name).
    UnknownIssuer,
    /// `notAfter` has passed (beyond the allowed skew).
    Expired {
        /// The certificate's `notAfter`, unix seconds.
        not_after: u64,
        /// The verification time, unix seconds.
        now: u64,
    },
    /// `notBefore` is in the future (beyond the allowed skew).
    NotYetValid {
        /// The certificate's `notBefore`, unix seconds.
        not_before: u64,
        /// The verification time, unix seconds.
        now: u64,
    },
    /// A CA certificate presented as a leaf.
    CaAsLeaf,
    /// The extended key usage does not allow this use (or is missing).
    WrongUsage,
    /// The key is not RSA or too small.
    WeakKey {
        /// Bits in the modulus (0 for a non-RSA key).
        bits: usize,
    },
    /// Listed in the current CRL.
    Revoked {
        /// The serial, lower-case hex.
        serial: String,
    },
    /// No CRL is installed, so revocation status is unknown.
    CrlMissing,
    /// The installed CRL is past its `nextUpdate`.
    CrlExpired {
        /// The CRL's `nextUpdate`, unix seconds.
        next_update: u64,
    },
    /// No identity this network issues (one SPIFFE URI in this trust domain).
    NoIdentity(String),
    /// Any other path-validation failure, as webpki names it.
    Invalid(String),
}

impl CertificateRejection {
    /// Stable, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::CaAsLeaf => "ca_as_leaf",
            Self::WrongUsage => "wrong_usage",
            Self::WeakKey { .. } => "weak_key",
            Self::Revoked { .. } => "revoked",
            Self::CrlMissing => "crl_missing",
            Self::CrlExpired { .. } => "crl_expired",
            Self::NoIdentity(_) => "no_identity",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for CertificateRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("not a parseable X.509 certificate"),
            Self::UnknownIssuer => f.write_str(
                "not issued by this network's root CA (check that both sides use the same ca-cert.pem)",
            ),
            Self::Expired { not_after, now } => write!(
                f,
                "expired at {not_after} (now {now}); renew the node certificate"
            ),
            Self::NotYetValid { not_before, now } => write!(
                f,
                "not valid before {not_before} (now {now}); check the clocks of both machines"
            ),
            Self::CaAsLeaf => f.write_str("a CA certificate cannot identify a peer"),
            Self::WrongUsage => {
                f.write_str("its extended key usage does not allow this use (clientAuth/serverAuth)")
            }
            Self::WeakKey { bits: 0 } => f.write_str("its key is not RSA"),
            Self::WeakKey { bits } => write!(f, "its RSA key has {bits} bits; 2048 is the minimum"),
            Self::Revoked { serial } => write!(f, "serial {serial} is revoked"),
            Self::CrlMissing => f.write_str(
                "no CRL is installed, so revocation status is unknown; fetch the CRL from the authority",
            ),
            Self::CrlExpired { next_update } => write!(
                f,
                "the installed CRL expired at {next_update}; the authority must publish a fresh one"
            ),
            Self::NoIdentity(d) => write!(f, "no identity of this network: {d}"),
            Self::Invalid(d) => write!(f, "path validation failed: {d}"),
        }
    }
}

/// Why a CRL could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrlRejection {
    /// Not a parseable v2 CRL.
    Malformed(String),
    /// Issued by another name than the root.
    WrongIssuer,
    /// Its signature does not verify with the root key.
    BadSignature,
    /// No `nextUpdate` (we refuse CRLs that never expire).
    NoNextUpdate,
    /// No CRL number extension.
    NoNumber,
    /// Past its `nextUpdate` already.
    Expired {
        /// `nextUpdate`, unix seconds.
        next_update: u64,
    },
    /// Its number is lower than the installed one: a rollback.
    Rollback {
        /// Number of the installed CRL.
        installed: u64,
        /// Number offered.
        offered: u64,
    },
}

impl fmt::Display for CrlRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(d) => write!(f, "not a parseable X.509 v2 CRL ({d})"),
            Self::WrongIssuer => f.write_str("issued by another name than this network's root"),
            Self::BadSignature => f.write_str("its signature does not verify with the root key"),
            Self::NoNextUpdate => f.write_str("it has no nextUpdate, so it could never expire"),
            Self::NoNumber => f.write_str("it has no CRL number, so a rollback could not be seen"),
            Self::Expired { next_update } => write!(f, "it expired at {next_update}"),
            Self::Rollback { installed, offered } => write!(
                f,
                "its number {offered} is lower than the installed {installed} (rollback)"
            ),
        }
    }
}

/// Why a message signature was refused. [`SignatureRejection::label`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureRejection {
    /// A required header is absent.
    MissingHeader(&'static str),
    /// A header is present but not well formed.
    MalformedHeader(&'static str),
    /// `X-From-Node` does not name the TLS peer.
    SignerNotPeer,
    /// `X-Node-Auth` is not the fingerprint of the TLS peer's certificate.
    FingerprintMismatch,
    /// The request was addressed to another destination.
    DestinationMismatch,
    /// The timestamp is older than the window.
    Stale {
        /// Seconds the timestamp is behind `now`.
        age: u64,
    },
    /// The timestamp is ahead of `now` beyond the skew.
    Future {
        /// Seconds the timestamp is ahead of `now`.
        ahead: u64,
    },
    /// The signature does not verify.
    BadSignature,
    /// The signature verifies only with the maximum PSS salt; the scheme fixes 32 bytes.
    SaltLength,
    /// The nonce was seen before (decided by the policy layer).
    Replayed,
}

impl SignatureRejection {
    /// Stable, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::SignerNotPeer => "unknown_node",
            Self::FingerprintMismatch => "fingerprint_mismatch",
            Self::DestinationMismatch => "destination_mismatch",
            Self::Stale { .. } => "stale",
            Self::Future { .. } => "future",
            Self::BadSignature => "bad_signature",
            Self::SaltLength => "bad_salt_length",
            Self::Replayed => "replayed",
        }
    }
}

impl fmt::Display for SignatureRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingHeader(h) => write!(f, "header {h} is missing"),
            Self::MalformedHeader(h) => write!(f, "header {h} is malformed"),
            Self::SignerNotPeer => f.write_str("X-From-Node does not name the TLS peer"),
            Self::FingerprintMismatch => {
                f.write_str("X-Node-Auth is not the fingerprint of the TLS peer's certificate")
            }
            Self::DestinationMismatch => {
                f.write_str("the request was signed for another destination")
            }
            Self::Stale { age } => write!(f, "the timestamp is {age} s old, outside the window"),
            Self::Future { ahead } => write!(f, "the timestamp is {ahead} s in the future"),
            Self::BadSignature => f.write_str("the signature does not verify"),
            Self::SaltLength => f.write_str(
                "the RSA-PSS salt is not 32 bytes (Python: use padding.PSS(salt_length=32))",
            ),
            Self::Replayed => f.write_str("the nonce was seen before (replay)"),
        }
    }
}

impl From<CertificateRejection> for Error {
    fn from(r: CertificateRejection) -> Self {
        Self::CertificateRejected(r)
    }
}

impl From<SignatureRejection> for Error {
    fn from(r: SignatureRejection) -> Self {
        Self::SignatureRejected(r)
    }
}

impl From<CsrRejection> for Error {
    fn from(r: CsrRejection) -> Self {
        Self::CsrRejected(r)
    }
}

impl From<CrlRejection> for Error {
    fn from(r: CrlRejection) -> Self {
        Self::CrlRejected(r)
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
