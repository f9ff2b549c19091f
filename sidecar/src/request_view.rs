//! The one reading of an inbound request that every native check, every plugin and the app
//! share: its canonical path ([`request_path`]), the authority it names, and its headers
//! with every spelling of an identity header the sidecar owns taken out.
//!
//! The rule it serves: what the app handles is exactly what the sidecar checked. The ingress
//! builds these once per request, before any decision, and forwards exactly them:
//! - the path: [`request_path::canonical_path`]; a spelling two parsers could read
//!   differently is refused;
//! - the authority ([`checked_authority`]): one `Host` (or an HTTP/2 `:authority`, or an
//!   absolute-form target) that agrees with every other place the request names one; the
//!   signature's destination is checked against it and the app receives it as `Host`;
//! - headers ([`remove_owned_headers`]): any header whose name, with `_` read as `-` (as
//!   CGI-style servers such as gunicorn and Apache read it), is one the sidecar owns is
//!   removed before the request goes further. The sidecar then sets its own.

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// Exact names (lower case, `-` spelling) of headers the sidecar owns.
const OWNED_NAMES: [&str; 2] = ["forwarded", "x-real-ip"];

/// Name prefixes of headers the sidecar owns: its identity headers (`x-verified-*`), and
/// the names proxies use to tell an app who the client is or what certificate it showed
/// (`x-forwarded-*`, `x-forwarded-client-cert` among them; `x-client-cert*`, `x-ssl-*`,
/// `ssl-client-*`). The sidecar sets only `x-verified-*`; the others are removed so an app
/// configured to trust its proxy for them cannot be told anything by a client.
const OWNED_PREFIXES: [&str; 5] = [
    "x-verified-",
    "x-forwarded-",
    "x-client-cert",
    "x-ssl-",
    "ssl-client-",
];

/// `name` (lower case, as hyper gives it) starts with `prefix` (lower case, `-` spelling)
/// when `_` is read as `-`.
fn starts_with_folded(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len()
        && name
            .iter()
            .zip(prefix)
            .all(|(n, p)| n == p || (*n == b'_' && *p == b'-'))
}

/// `name` spells `canonical` (lower case, `-` spelling) when `_` is read as `-`.
pub fn spells(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len() && starts_with_folded(name.as_bytes(), canonical.as_bytes())
}

/// Whether the sidecar owns the header `name` (lower case), however it is spelled.
pub fn owned_by_sidecar(name: &str) -> bool {
    let bytes = name.as_bytes();
    // Every owned name starts with `x`, `f` or `s`: one byte decides for nearly all.
    if !matches!(bytes.first(), Some(b'x' | b'f' | b's')) {
        return false;
    }
    OWNED_NAMES.iter().any(|n| spells(name, n))
        || OWNED_PREFIXES
            .iter()
            .any(|p| starts_with_folded(bytes, p.as_bytes()))
}

/// Removes every header the sidecar owns, however spelled; returns how many names it
/// removed.
pub fn remove_owned_headers(headers: &mut HeaderMap) -> usize {
    // Nearly every request carries none: look before allocating.
    if !headers.keys().any(|k| owned_by_sidecar(k.as_str())) {
        return 0;
    }
    let owned: Vec<HeaderName> = headers
        .keys()
        .filter(|k| owned_by_sidecar(k.as_str()))
        .cloned()
        .collect();
    for name in &owned {
        headers.remove(name);
    }
    owned.len()
}

/// Why the request's authority is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityRejection {
    /// Neither `Host` nor `:authority` nor an absolute-form target.
    Missing,
    /// More than one `Host` line.
    Repeated,
    /// A `Host` that is not `host[:port]`.
    Malformed,
    /// `Host` names another authority than the target or `:authority`.
    Conflicting,
}

impl AuthorityRejection {
    /// Every rejection, for pre-registering metric labels.
    pub const ALL: [Self; 4] = [
        Self::Missing,
        Self::Repeated,
        Self::Malformed,
        Self::Conflicting,
    ];

    /// A short stable name, for metric labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "host_missing",
            Self::Repeated => "host_repeated",
            Self::Malformed => "host_malformed",
            Self::Conflicting => "host_conflicting",
        }
    }

    /// What the client is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "the request names no host: send a Host header",
            Self::Repeated => "the request has more than one Host header",
            Self::Malformed => "the Host header is not host[:port]",
            Self::Conflicting => "the Host header and the request target name different hosts",
        }
    }
}

/// `host[:port]` (or `[v6][:port]`) has no port, an empty one, or a number up to 65535:
/// `http`'s parser takes any text after the colon.
fn port_ok(authority: &str) -> bool {
    let port = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((_, "")) => None,
            Some((_, after)) => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
            None => return false,
        },
        None => authority.split_once(':').map(|(_, port)| port),
    };
    port.is_none_or(|p| p.is_empty() || p.parse::<u16>().is_ok())
}

/// The one authority the request names, as the app will receive it in `Host`: the target's
/// (absolute-form, or HTTP/2's `:authority`) or the single `Host` header's, which must agree
/// (RFC 9112 3.2, RFC 9113 8.3.1) and be a plain `host[:port]`.
pub fn checked_authority(
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<HeaderValue, AuthorityRejection> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityRejection::Repeated);
    }
    let host = match host {
        Some(value) => {
            let text = value.to_str().map_err(|_| AuthorityRejection::Malformed)?;
            let parsed = text
                .parse::<http::uri::Authority>()
                .map_err(|_| AuthorityRejection::Malformed)?;
            if text.is_empty() || text.contains('@') || parsed.as_str() != text || !port_ok(text) {
                return Err(AuthorityRejection::Malformed);
            }
            Some(value)
        }
        None => None,
    };
    match (uri.authority(), host) {
        (Some(target), Some(host)) => {
            if !target
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes())
            {
                return Err(AuthorityRejection::Conflicting);
            }
            Ok(host.clone())
        }
        (Some(target), None) => {
            if target.as_str().contains('@') {
                return Err(AuthorityRejection::Malformed);
            }
            HeaderValue::from_str(target.as_str()).map_err(|_| AuthorityRejection::Malformed)
        }
        (None, Some(host)) => Ok(host.clone()),
        (None, None) => Err(AuthorityRejection::Missing),
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes the hop-by-hop headers (RFC 9110 7.6.1) and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: check with one pass before any removal.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn every_spelling_of_an_owned_header_is_owned() {
        for name in [
            "x-verified-node-id",
            "x_verified_node_id",
            "x-verified_roles",
            "x_verified-anything",
            "x-forwarded-client-cert",
            "x_forwarded_client_cert",
            "x-forwarded-for",
            "x_forwarded_host",
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-client-cert",
            "x-ssl-client-s-dn",
            "ssl_client_cert",
        ] {
            assert!(owned_by_sidecar(name), "{name}");
        }
        for name in [
            "x-from-node",
            "x-signature",
            "content-type",
            "x-verifiedx",
            "forwarded-x",
            "x-realip",
            "authorization",
            "xverified-node-id",
            "",
        ] {
            assert!(!owned_by_sidecar(name), "{name}");
        }
    }

    #[test]
    fn owned_headers_are_removed_and_counted_others_kept() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-verified-node-id", "999"),
            ("x_verified_roles", "admin"),
            ("x-forwarded-client-cert", "Hash=1"),
            ("content-type", "text/plain"),
            ("x-from-node", "3"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        assert_eq!(remove_owned_headers(&mut h), 3);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-from-node"]);
        assert_eq!(remove_owned_headers(&mut h), 0);
    }

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn one_authority_or_a_refusal() {
        use AuthorityRejection as R;
        let origin: Uri = "/fl/update".parse().unwrap();
        let absolute: Uri = "https://node-1:8443/fl/update".parse().unwrap();
        let ok = |u: &Uri, h: &[&str]| {
            checked_authority(u, &headers(h)).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(ok(&origin, &["node-1:8443"]).unwrap(), "node-1:8443");
        assert_eq!(ok(&origin, &["[::1]:8443"]).unwrap(), "[::1]:8443");
        assert_eq!(ok(&origin, &["node-1"]).unwrap(), "node-1");
        assert_eq!(ok(&absolute, &[]).unwrap(), "node-1:8443");
        assert_eq!(ok(&absolute, &["NODE-1:8443"]).unwrap(), "NODE-1:8443");
        assert_eq!(ok(&absolute, &["node-2:8443"]), Err(R::Conflicting));
        assert_eq!(ok(&origin, &[]), Err(R::Missing));
        assert_eq!(ok(&origin, &["a", "a"]), Err(R::Repeated));
        for bad in [
            "",
            "a b",
            "user@node-1",
            "node-1/x",
            "node-1:port",
            "node-1?x",
        ] {
            assert_eq!(ok(&origin, &[bad]), Err(R::Malformed), "{bad:?}");
        }
        let with_user: Uri = "https://user@node-1/x".parse().unwrap();
        assert_eq!(ok(&with_user, &[]), Err(R::Malformed));
    }
}
