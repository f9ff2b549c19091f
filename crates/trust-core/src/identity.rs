//! Who a certificate speaks for: trust domains, node ids, admin names, SPIFFE ids, roles,
//! fingerprints and serials, and [`PeerIdentity`], the verified result the sidecar forwards.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::UnixTime;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A SPIFFE trust domain: lower-case DNS-like label(s), e.g. `sovereign.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The domain as written in SPIFFE ids.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && !s.starts_with(['.', '-'])
            && !s.ends_with(['.', '-']);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidName {
                what: "trust domain",
                value: s.to_owned(),
                rule: "use 1-255 characters of a-z, 0-9, '.' and '-', not starting or ending with '.' or '-'",
            })
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's id: a positive decimal number, assigned by the authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// Wraps a number; `None` for 0, which no node has.
    pub fn new(n: u32) -> Option<Self> {
        (n > 0).then_some(Self(n))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let canonical = !s.is_empty()
            && s.len() <= 9
            && s.bytes().all(|b| b.is_ascii_digit())
            && !s.starts_with('0');
        canonical
            .then(|| s.parse::<u32>().ok())
            .flatten()
            .and_then(Self::new)
            .ok_or_else(|| Error::InvalidName {
                what: "node id",
                value: s.chars().take(64).collect(),
                rule: "a node id is a decimal number from 1 to 999999999 without leading zeros",
            })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An administrator's name: `[a-z][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdminName(String);

impl AdminName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdminName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut bytes = s.bytes();
        let ok = s.len() <= 63
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidName {
                what: "admin name",
                value: s.chars().take(64).collect(),
                rule: "start with a-z, then up to 62 of a-z, 0-9 and '-'",
            })
        }
    }
}

/// What a certificate is issued to; decides its SPIFFE id, common name and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A service node: `spiffe://<td>/node/<id>`, CN `node-<id>`.
    Node(NodeId),
    /// An operator: `spiffe://<td>/admin/<name>`, CN `<name>`.
    Admin(AdminName),
}

impl Subject {
    /// The SPIFFE id in `domain`.
    pub fn spiffe_id(&self, domain: &TrustDomain) -> String {
        match self {
            Self::Node(id) => format!("spiffe://{domain}/node/{id}"),
            Self::Admin(name) => format!("spiffe://{domain}/admin/{}", name.as_str()),
        }
    }

    /// The subject common name.
    pub fn common_name(&self) -> String {
        match self {
            Self::Node(id) => format!("node-{id}"),
            Self::Admin(name) => name.as_str().to_owned(),
        }
    }

    /// The id a signer puts in `X-From-Node`: the node number, or the admin name.
    pub fn id_string(&self) -> String {
        match self {
            Self::Node(id) => id.to_string(),
            Self::Admin(name) => name.as_str().to_owned(),
        }
    }

    /// The role this subject holds.
    pub fn role(&self) -> Role {
        match self {
            Self::Node(_) => Role::Node,
            Self::Admin(_) => Role::Admin,
        }
    }

    /// Parses a SPIFFE id of `domain` back into a subject.
    pub fn from_spiffe_id(uri: &str, domain: &TrustDomain) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_prefix(domain.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| format!("URI SAN is not in trust domain {domain}"))?;
        match rest.split_once('/') {
            Some(("node", id)) => id.parse().map(Self::Node).map_err(|e| e.to_string()),
            Some(("admin", name)) => name.parse().map(Self::Admin).map_err(|e| e.to_string()),
            _ => Err("URI SAN path is neither /node/<id> nor /admin/<name>".to_owned()),
        }
    }
}

/// A role a verified peer holds; plugins decide what each may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A service node.
    Node,
    /// An operator.
    Admin,
}

impl Role {
    /// The role's name on the wire (`X-Verified-Roles`) and in plugins.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Admin => "admin",
        }
    }
}

/// SHA-256 of a certificate's DER; shown as base64url without padding (`X-Node-Auth`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses the base64url form; `None` if it is not 32 bytes of base64url.
    pub fn from_base64url(s: &str) -> Option<Self> {
        if s.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).ok()?;
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A certificate serial number, normalised (no leading zero bytes); shown as lower-case hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From the big-endian bytes of the INTEGER (leading zeros stripped).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Self(bytes[start..].to_vec())
    }

    /// The normalised big-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Parses lower- or upper-case hex, with optional `:` separators (openssl style).
    pub fn from_hex(s: &str) -> Result<Self> {
        let compact: String = s.chars().filter(|&c| c != ':').collect();
        let bytes = if compact.len() % 2 == 1 {
            hex::decode(format!("0{compact}"))
        } else {
            hex::decode(&compact)
        };
        match bytes {
            Ok(b) if !b.is_empty() && b.len() <= 20 => Ok(Self::from_bytes(&b)),
            _ => Err(Error::InvalidName {
                what: "serial number",
                value: s.chars().take(64).collect(),
                rule: "a serial is 1 to 20 bytes of hex, e.g. 3f9a01...",
            }),
        }
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

/// The identity read from a verified certificate. Cheap to share behind an `Arc`.
#[derive(Clone)]
pub struct PeerIdentity {
    /// Who the certificate is for.
    pub subject: Subject,
    /// `spiffe://<td>/node/<id>` or `spiffe://<td>/admin/<name>`.
    pub spiffe_id: String,
    /// Roles held (today one, from the SPIFFE path).
    pub roles: Vec<Role>,
    /// Certificate serial.
    pub serial: Serial,
    /// SHA-256 of the certificate DER.
    pub fingerprint: Fingerprint,
    /// `notAfter`.
    pub not_after: UnixTime,
    /// The certificate's public key, parsed once for RSA-PSS message verification.
    pub(crate) public_key: ParsedPublicKey,
}

impl PeerIdentity {
    /// The id a signer of this identity puts in `X-From-Node`.
    pub fn id_string(&self) -> String {
        self.subject.id_string()
    }

    /// Whether the peer holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("roles", &self.roles)
            .field("serial", &self.serial)
            .field("fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after.as_secs())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_canonical_decimals() {
        assert_eq!("7".parse::<NodeId>().map(NodeId::get).ok(), Some(7));
        for bad in [
            "",
            "0",
            "07",
            "-1",
            "+1",
            "1e3",
            "abc",
            "1234567890",
            " 1",
            "١",
        ] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn admin_names_and_domains_refuse_hostile_characters() {
        assert!("alice-2".parse::<AdminName>().is_ok());
        for bad in ["", "Alice", "2alice", "a/b", "a\nb", "a b", &"a".repeat(64)] {
            assert!(bad.parse::<AdminName>().is_err(), "{bad:?}");
        }
        assert!("sovereign.local".parse::<TrustDomain>().is_ok());
        for bad in ["", ".x", "x.", "X.local", "a/b", "a b"] {
            assert!(bad.parse::<TrustDomain>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spiffe_ids_round_trip_and_refuse_other_domains() -> Result<()> {
        let td: TrustDomain = "sovereign.local".parse()?;
        let node = Subject::Node("12".parse()?);
        assert_eq!(node.spiffe_id(&td), "spiffe://sovereign.local/node/12");
        assert_eq!(
            Subject::from_spiffe_id(&node.spiffe_id(&td), &td).ok(),
            Some(node)
        );
        let admin = Subject::Admin("ops".parse()?);
        assert_eq!(
            Subject::from_spiffe_id(&admin.spiffe_id(&td), &td).ok(),
            Some(admin)
        );
        for bad in [
            "spiffe://evil.local/node/1",
            "spiffe://sovereign.localx/node/1",
            "spiffe://sovereign.local/node/01",
            "spiffe://sovereign.local/node/1/extra",
            "spiffe://sovereign.local/root/1",
            "https://sovereign.local/node/1",
        ] {
            assert!(Subject::from_spiffe_id(bad, &td).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn serials_normalise_and_parse_openssl_hex() -> Result<()> {
        let s = Serial::from_bytes(&[0, 0, 0x3f, 0x01]);
        assert_eq!(s.to_string(), "3f01");
        assert_eq!(Serial::from_hex("3F:01")?, s);
        assert_eq!(Serial::from_hex("00003f01")?, s);
        assert!(Serial::from_hex("xyz").is_err());
        assert!(Serial::from_hex(&"ab".repeat(21)).is_err());
        Ok(())
    }

    #[test]
    fn fingerprints_parse_only_exact_base64url() {
        let fp = Fingerprint::of_der(b"cert");
        assert_eq!(Fingerprint::from_base64url(&fp.to_string()), Some(fp));
        assert_eq!(Fingerprint::from_base64url("short"), None);
        let padded = format!("{fp}=");
        assert_eq!(Fingerprint::from_base64url(&padded), None);
    }
}
