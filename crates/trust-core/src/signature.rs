//! Per-request message signatures (the seed's header scheme), signed on egress and verified
//! on ingress.
//!
//! # The canonical string
//!
//! Eight lines joined by `\n`, no trailing newline:
//!
//! ```text
//! tpm-sig-v1
//! <METHOD, upper case>
//! <destination authority, lower case: the Host the sender addressed, host[:port]>
//! <path with query, exactly as sent>
//! <X-From-Node>
//! <X-Timestamp: unix seconds>
//! <X-Nonce>
//! <base64 (standard, padded) of SHA-256 of the body>
//! ```
//!
//! signed with RSA-PSS, SHA-256, MGF1-SHA-256 and a salt of exactly 32 bytes; the signature
//! is sent base64 (standard, padded) in `X-Signature`. `X-Node-Auth` is the base64url SHA-256
//! of the signer's certificate. `docs/TRUST_GUIDE.md` has a worked example in Python.
//!
//! Verification binds the signature to the TLS peer: `X-From-Node` must name the peer and
//! `X-Node-Auth` must be the peer certificate's fingerprint. Nonce uniqueness is the policy
//! layer's job (the `replay-window` plugin); [`VerifiedSignature`] carries what it needs.

use std::time::Duration;

use aws_lc_rs::signature::{
    RSA_PSS_2048_8192_SHA256, RsaParameters, RsaPssSaltLength, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::UnixTime;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result, SignatureRejection as Reject};
use crate::identity::{Fingerprint, PeerIdentity, Subject};
use crate::keys::NodeKey;

/// The version tag, first line of the canonical string.
pub const VERSION_TAG: &str = "tpm-sig-v1";

/// Header names, lower case as HTTP/2 and hyper use them.
pub mod header {
    /// The sender's node id.
    pub const FROM_NODE: &str = "x-from-node";
    /// Unix seconds when the request was signed.
    pub const TIMESTAMP: &str = "x-timestamp";
    /// 16 to 64 random bytes, base64url without padding.
    pub const NONCE: &str = "x-nonce";
    /// base64url SHA-256 fingerprint of the sender's certificate.
    pub const NODE_AUTH: &str = "x-node-auth";
    /// base64 RSA-PSS signature over the canonical string.
    pub const SIGNATURE: &str = "x-signature";
    /// All five, in canonical order.
    pub const ALL: [&str; 5] = [FROM_NODE, TIMESTAMP, NONCE, NODE_AUTH, SIGNATURE];
}

/// Bytes of randomness in nonces this crate makes.
pub const NONCE_BYTES: usize = 16;

/// Verification that accepts any salt length, used only to explain a failure.
const PSS_MAX_SALT: RsaParameters =
    RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);

/// The parts of a request the signature covers, besides the signature headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The destination authority the sender addressed (`Host`), `host[:port]`.
    pub authority: &'a str,
    /// Path and query, exactly as in the request target.
    pub path_and_query: &'a str,
    /// SHA-256 of the body (of the empty string when there is none).
    pub body_sha256: [u8; 32],
}

impl<'a> RequestParts<'a> {
    /// Parts with the digest of `body` computed here.
    pub fn new(method: &'a str, authority: &'a str, path_and_query: &'a str, body: &[u8]) -> Self {
        Self {
            method,
            authority,
            path_and_query,
            body_sha256: Sha256::digest(body).into(),
        }
    }
}

/// The five header values a signer adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// `X-From-Node`.
    pub from_node: String,
    /// `X-Timestamp`.
    pub timestamp: String,
    /// `X-Nonce`.
    pub nonce: String,
    /// `X-Node-Auth`.
    pub node_auth: String,
    /// `X-Signature`.
    pub signature: String,
}

impl SignatureHeaders {
    /// `(name, value)` pairs in canonical order.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (header::FROM_NODE, &self.from_node),
            (header::TIMESTAMP, &self.timestamp),
            (header::NONCE, &self.nonce),
            (header::NODE_AUTH, &self.node_auth),
            (header::SIGNATURE, &self.signature),
        ]
    }
}

/// Header values as received; `None` where the header was absent. The caller refuses
/// duplicated headers before building this (an HTTP layer concern).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivedHeaders<'a> {
    /// `X-From-Node`.
    pub from_node: Option<&'a str>,
    /// `X-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-Nonce`.
    pub nonce: Option<&'a str>,
    /// `X-Node-Auth`.
    pub node_auth: Option<&'a str>,
    /// `X-Signature`.
    pub signature: Option<&'a str>,
}

impl<'a> ReceivedHeaders<'a> {
    /// Whether any signature header is present (a request with none is "unsigned").
    pub fn any_present(&self) -> bool {
        self.from_node.is_some()
            || self.timestamp.is_some()
            || self.nonce.is_some()
            || self.node_auth.is_some()
            || self.signature.is_some()
    }
}

/// The facts a verified signature establishes, handed to the policy chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The signing node (equal to the TLS peer's id).
    pub node: String,
    /// Signing time, unix seconds.
    pub timestamp: u64,
    /// The nonce, as sent (base64url).
    pub nonce: String,
}

/// How far a timestamp may be from `now`.
#[derive(Debug, Clone, Copy)]
pub struct SignatureWindow {
    /// Oldest accepted age.
    pub max_age: Duration,
    /// Furthest accepted future (clock skew).
    pub max_future: Duration,
}

impl Default for SignatureWindow {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            max_future: Duration::from_secs(30),
        }
    }
}

/// Builds the canonical string. Refuses components that could shift lines (CR, LF) or are
/// empty where a value is required.
pub fn canonical_string(
    parts: &RequestParts<'_>,
    from_node: &str,
    timestamp: &str,
    nonce: &str,
) -> Result<String, Reject> {
    let method = parts.method;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Reject::MalformedHeader(":method"));
    }
    let authority = parts.authority;
    if authority.is_empty()
        || !authority
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@')
    {
        return Err(Reject::MalformedHeader("host"));
    }
    let path = parts.path_and_query;
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Reject::MalformedHeader(":path"));
    }
    for (name, value) in [
        (header::FROM_NODE, from_node),
        (header::TIMESTAMP, timestamp),
        (header::NONCE, nonce),
    ] {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Reject::MalformedHeader(name));
        }
    }
    let body = STANDARD.encode(parts.body_sha256);
    Ok(format!(
        "{VERSION_TAG}\n{}\n{}\n{path}\n{from_node}\n{timestamp}\n{nonce}\n{body}",
        method.to_ascii_uppercase(),
        authority.to_ascii_lowercase(),
    ))
}

/// Signs requests as one node: its key, its id, its certificate's fingerprint.
#[derive(Debug)]
pub struct MessageSigner {
    key: NodeKey,
    from_node: String,
    fingerprint: Fingerprint,
}

impl MessageSigner {
    /// A signer for `subject` holding `key`, whose certificate (DER) is `cert_der`.
    pub fn new(key: NodeKey, subject: &Subject, cert_der: &[u8]) -> Self {
        Self {
            key,
            from_node: subject.id_string(),
            fingerprint: Fingerprint::of_der(cert_der),
        }
    }

    /// Signs with a fresh random nonce at `now`.
    pub fn sign(&self, parts: &RequestParts<'_>, now: UnixTime) -> Result<SignatureHeaders> {
        let mut nonce = [0u8; NONCE_BYTES];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Crypto {
            operation: "draw a nonce",
        })?;
        self.sign_with_nonce(parts, now, &URL_SAFE_NO_PAD.encode(nonce))
    }

    /// Signs with a given nonce (tests and fixtures).
    pub fn sign_with_nonce(
        &self,
        parts: &RequestParts<'_>,
        now: UnixTime,
        nonce: &str,
    ) -> Result<SignatureHeaders> {
        let timestamp = now.as_secs().to_string();
        let canonical = canonical_string(parts, &self.from_node, &timestamp, nonce)?;
        let signature = self.key.sign_pss(canonical.as_bytes())?;
        Ok(SignatureHeaders {
            from_node: self.from_node.clone(),
            timestamp,
            nonce: nonce.to_owned(),
            node_auth: self.fingerprint.to_string(),
            signature: STANDARD.encode(signature),
        })
    }
}

/// Verifies a signed request received over a TLS connection whose peer is `peer`.
///
/// `local_authorities` are the names this node answers to (`host:port`); a request signed
/// for another destination is refused. Checks run cheapest first; the RSA verification last.
pub fn verify_request(
    headers: &ReceivedHeaders<'_>,
    parts: &RequestParts<'_>,
    peer: &PeerIdentity,
    local_authorities: &[String],
    window: SignatureWindow,
    now: UnixTime,
) -> Result<VerifiedSignature, Reject> {
    let from_node = headers
        .from_node
        .ok_or(Reject::MissingHeader(header::FROM_NODE))?;
    let timestamp_text = headers
        .timestamp
        .ok_or(Reject::MissingHeader(header::TIMESTAMP))?;
    let nonce = headers.nonce.ok_or(Reject::MissingHeader(header::NONCE))?;
    let node_auth = headers
        .node_auth
        .ok_or(Reject::MissingHeader(header::NODE_AUTH))?;
    let signature_b64 = headers
        .signature
        .ok_or(Reject::MissingHeader(header::SIGNATURE))?;

    let timestamp = parse_timestamp(timestamp_text)?;
    check_nonce(nonce)?;
    let fingerprint =
        Fingerprint::from_base64url(node_auth).ok_or(Reject::MalformedHeader(header::NODE_AUTH))?;
    let signature = decode_signature(signature_b64)?;

    if from_node != peer.id_string() {
        return Err(Reject::SignerNotPeer);
    }
    if fingerprint != peer.fingerprint {
        return Err(Reject::FingerprintMismatch);
    }
    if !local_authorities
        .iter()
        .any(|a| a.eq_ignore_ascii_case(parts.authority))
    {
        return Err(Reject::DestinationMismatch);
    }
    let now_s = now.as_secs();
    if timestamp > now_s {
        let ahead = timestamp - now_s;
        if ahead > window.max_future.as_secs() {
            return Err(Reject::Future { ahead });
        }
    } else {
        let age = now_s - timestamp;
        if age > window.max_age.as_secs() {
            return Err(Reject::Stale { age });
        }
    }

    let canonical = canonical_string(parts, from_node, timestamp_text, nonce)?;
    if peer
        .public_key
        .verify_sig(canonical.as_bytes(), &signature)
        .is_err()
    {
        let max_salt = UnparsedPublicKey::new(&PSS_MAX_SALT, peer.public_key.as_ref());
        return Err(
            if max_salt.verify(canonical.as_bytes(), &signature).is_ok() {
                Reject::SaltLength
            } else {
                Reject::BadSignature
            },
        );
    }
    Ok(VerifiedSignature {
        node: from_node.to_owned(),
        timestamp,
        nonce: nonce.to_owned(),
    })
}

fn parse_timestamp(text: &str) -> Result<u64, Reject> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::MalformedHeader(header::TIMESTAMP));
    }
    text.parse()
        .map_err(|_| Reject::MalformedHeader(header::TIMESTAMP))
}

fn check_nonce(nonce: &str) -> Result<(), Reject> {
    // 16..=64 bytes is 22..=86 base64url characters.
    if !(22..=86).contains(&nonce.len()) {
        return Err(Reject::MalformedHeader(header::NONCE));
    }
    match URL_SAFE_NO_PAD.decode(nonce) {
        Ok(bytes) if (16..=64).contains(&bytes.len()) => Ok(()),
        _ => Err(Reject::MalformedHeader(header::NONCE)),
    }
}

fn decode_signature(text: &str) -> Result<Vec<u8>, Reject> {
    // RSA-2048..8192 signatures are 256..1024 bytes: 344..1368 base64 characters.
    if !(344..=1368).contains(&text.len()) {
        return Err(Reject::MalformedHeader(header::SIGNATURE));
    }
    STANDARD
        .decode(text)
        .map_err(|_| Reject::MalformedHeader(header::SIGNATURE))
}
