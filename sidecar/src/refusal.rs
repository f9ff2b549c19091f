//! Every way the sidecar refuses a request, as one typed value. A step of the ingress or
//! egress path returns `Err(Refusal)`; [`Refusal::respond`] is the one place that turns it
//! into what the caller sees (status and a short JSON reason), what the metrics count
//! (`tpm_requests_total{outcome}` and the reason-specific counter) and what the log says,
//! recording who failed ([`Fault`]: the client, the app or peer, a plugin, or the sidecar
//! itself), as pingora keeps that distinction.
//!
//! A reason sent to the caller says what the caller can fix and nothing of the inside: no
//! address, no library text, and for a refused signature no hint of which check failed
//! beyond what a legitimate sender needs (its clock, a missing signature). The detail goes
//! to the log and the metric label.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use trust_core::SignatureRejection;

use crate::body::{ResponseBody, full};
use crate::log_sampling::Event;
use crate::metrics::Metrics;

/// Which side of the sidecar a request was refused on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A peer's request to the local app.
    Ingress,
    /// The local app's request to a peer.
    Egress,
}

impl Direction {
    /// The `direction` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller sent something the sidecar does not accept.
    Client,
    /// The app (ingress) or the peer (egress) failed.
    Upstream,
    /// A policy plugin said no.
    Policy,
    /// The sidecar could not do its part.
    Sidecar,
}

/// A refused request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer's certificate stopped being trusted after the connection opened (revoked,
    /// expired, or the CRL expired).
    PeerNoLongerTrusted(String),
    /// An anonymous client outside `anonymous_prefixes`.
    CertificateRequired,
    /// The body is over `max_body_bytes`; `close` when it was not read off the connection.
    BodyTooLarge {
        /// Close the connection after the answer.
        close: bool,
    },
    /// A body read whole (for its digest) did not arrive within `body_read_timeout`.
    BodyTooSlow,
    /// The request's path or authority has no one reading.
    Unreadable {
        /// The `tpm_bad_requests_total` reason.
        label: &'static str,
        /// What the client is told.
        reason: String,
    },
    /// The signature headers are duplicated, misspelled or not ASCII.
    SignatureHeaders(String),
    /// Signature headers from a client without a certificate to bind them to.
    SignatureWithoutCertificate,
    /// The message signature was refused.
    Signature {
        /// Why.
        rejection: SignatureRejection,
        /// The signer's SPIFFE id, for the log.
        peer: String,
    },
    /// A policy plugin denied the request.
    Policy {
        /// The plugin's status (a 4xx; anything else becomes 403).
        status: u16,
        /// The plugin's reason, sent to the caller.
        reason: String,
        /// `name@version` of the plugin.
        by: String,
        /// The plugin reported refusing the signature, for this reason label.
        signature: Option<&'static str>,
    },
    /// The canonical target could not be put in a URI to forward.
    TargetNotForwardable,
    /// Ingress: the app did not answer within `upstream_timeout`.
    AppTimeout,
    /// Ingress: the app could not be reached, or failed mid-answer (the error, for the log).
    AppUnreachable(String),
    /// Egress: the peer did not answer within the egress timeout.
    PeerTimeout,
    /// Egress: the peer could not be reached (the error, for the log).
    PeerUnreachable(String),
    /// Egress: the peer's certificate was refused.
    PeerCertificate(String),
    /// Egress: `CONNECT`.
    Connect,
    /// Egress: not an absolute-form `http://` request.
    NotAbsoluteHttp,
    /// Egress: the URL has no host.
    NoHost,
    /// Egress: the host is no known peer.
    UnknownPeer,
    /// Egress: the peer name cannot be used for TLS.
    PeerNameNotUsable(String),
    /// Egress: the request could not be signed.
    SigningFailed(String),
}

impl Refusal {
    /// Who failed.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Policy { .. } => Fault::Policy,
            Self::AppTimeout
            | Self::AppUnreachable(_)
            | Self::PeerTimeout
            | Self::PeerUnreachable(_)
            | Self::PeerCertificate(_) => Fault::Upstream,
            Self::SigningFailed(_) | Self::PeerNameNotUsable(_) | Self::TargetNotForwardable => {
                Fault::Sidecar
            }
            _ => Fault::Client,
        }
    }

    /// The status the caller gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PeerNoLongerTrusted(_) => StatusCode::FORBIDDEN,
            Self::CertificateRequired
            | Self::SignatureWithoutCertificate
            | Self::Signature { .. } => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::Unreadable { .. }
            | Self::SignatureHeaders(_)
            | Self::TargetNotForwardable
            | Self::NotAbsoluteHttp
            | Self::NoHost => StatusCode::BAD_REQUEST,
            Self::Policy { status, .. } => StatusCode::from_u16(*status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::FORBIDDEN),
            Self::AppTimeout | Self::PeerTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::AppUnreachable(_)
            | Self::PeerUnreachable(_)
            | Self::PeerCertificate(_)
            | Self::UnknownPeer
            | Self::PeerNameNotUsable(_) => StatusCode::BAD_GATEWAY,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Self::SigningFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `outcome` label of `tpm_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::PeerNoLongerTrusted(_) | Self::CertificateRequired => "refused_certificate",
            Self::SignatureHeaders(_)
            | Self::SignatureWithoutCertificate
            | Self::Signature { .. } => "refused_signature",
            Self::Policy { .. } => "refused_policy",
            Self::AppTimeout
            | Self::AppUnreachable(_)
            | Self::PeerTimeout
            | Self::PeerUnreachable(_)
            | Self::PeerCertificate(_) => "upstream_error",
            _ => "refused_request",
        }
    }

    /// What the caller is told.
    pub fn public_reason(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Self::PeerNoLongerTrusted(_) => "peer certificate is no longer trusted",
            Self::CertificateRequired => "a client certificate is required",
            Self::BodyTooLarge { .. } => "request body too large",
            Self::BodyTooSlow => "request body not received in time",
            Self::Unreadable { reason, .. }
            | Self::SignatureHeaders(reason)
            | Self::Policy { reason, .. } => return Cow::Borrowed(reason),
            Self::SignatureWithoutCertificate => {
                "a signed request needs a client certificate: the signature is bound to the TLS peer"
            }
            Self::Signature { rejection, .. } => signature_refusal(rejection),
            Self::TargetNotForwardable => "request target cannot be forwarded",
            Self::AppTimeout => "the app did not answer in time",
            Self::AppUnreachable(_) => "the app could not be reached",
            Self::PeerTimeout => "the peer did not answer in time",
            Self::PeerUnreachable(_) => "the peer could not be reached",
            Self::PeerCertificate(_) => "the peer's certificate was refused",
            Self::Connect => {
                "CONNECT is not supported: use http:// URLs; the sidecar adds mutual TLS and signs"
            }
            Self::NotAbsoluteHttp => {
                "send absolute-form http:// requests (set HTTP_PROXY to this address)"
            }
            Self::NoHost => "the request URL has no host",
            Self::UnknownPeer => {
                "unknown peer: add it to egress.peers (or set egress.default_peer_port)"
            }
            Self::PeerNameNotUsable(_) => "the peer name is not usable for TLS",
            Self::SigningFailed(_) => "the sidecar could not sign the request",
        })
    }

    /// Whether the connection ends after this answer: the body was left unread, or the
    /// connection's own client can never be admitted on it (its certificate revoked or
    /// expired, or it presented none). Answering such a client again and again on one
    /// keep-alive connection would cost it nothing; reconnecting costs it a handshake,
    /// which is refused.
    pub fn ends_connection(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge { close: true }
                | Self::PeerNoLongerTrusted(_)
                | Self::CertificateRequired
                | Self::SignatureWithoutCertificate
        )
    }

    /// Counts the refusal (`tpm_requests_total` and the counter of its kind), logs it
    /// (sampled: [`crate::log_sampling`], keyed by the client's address `from`), and builds
    /// the answer; `Connection: close` on HTTP/1 when [`Self::ends_connection`].
    pub fn respond(
        self,
        direction: Direction,
        metrics: &Metrics,
        from: Option<IpAddr>,
    ) -> Response<ResponseBody> {
        metrics.request(direction.label(), self.outcome());
        self.count_reason(direction, metrics);
        if let Some(event) = self.log_event()
            && metrics.log.admit(event, from)
        {
            self.log(direction);
        }
        let mut response = json_error(self.status(), &self.public_reason());
        if self.ends_connection() {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    fn count_reason(&self, direction: Direction, metrics: &Metrics) {
        let upstream = |kind: &str| {
            metrics
                .upstream_errors
                .with_label_values(&[direction.label(), kind])
                .inc();
        };
        match self {
            Self::Unreadable { label, .. } => metrics.bad_request(label),
            Self::SignatureWithoutCertificate => metrics.signature_refused("anonymous"),
            Self::Signature { rejection, .. } => metrics.signature_refused(rejection.label()),
            Self::Policy {
                signature: Some(label),
                ..
            } => metrics.signature_refused(label),
            Self::AppTimeout | Self::PeerTimeout => upstream("timeout"),
            Self::AppUnreachable(_) | Self::PeerUnreachable(_) => upstream("unreachable"),
            Self::PeerCertificate(_) => upstream("peer_certificate"),
            _ => {}
        }
    }

    /// The kind of log line this refusal writes, if any ([`crate::log_sampling`] budgets
    /// each kind). Policy denials are logged where they are decided, with the request.
    fn log_event(&self) -> Option<Event> {
        Some(match self {
            Self::PeerNoLongerTrusted(_) => Event::PeerNoLongerTrusted,
            Self::Signature { .. } => Event::SignatureRefused,
            Self::AppUnreachable(_)
            | Self::PeerUnreachable(_)
            | Self::PeerCertificate(_)
            | Self::PeerNameNotUsable(_) => Event::UpstreamFailed,
            Self::SigningFailed(_) => Event::SigningFailed,
            _ => return None,
        })
    }

    fn log(&self, direction: Direction) {
        let direction = direction.label();
        match self {
            Self::PeerNoLongerTrusted(why) => {
                tracing::warn!(direction, reason = %why, "request from a peer no longer trusted");
            }
            Self::Signature { rejection, peer } => {
                tracing::warn!(direction, %peer, reason = rejection.label(), "message signature refused");
            }
            Self::AppUnreachable(error)
            | Self::PeerUnreachable(error)
            | Self::PeerCertificate(error)
            | Self::PeerNameNotUsable(error) => {
                tracing::warn!(direction, %error, "upstream request failed");
            }
            Self::SigningFailed(error) => {
                tracing::error!(direction, %error, "signing failed");
            }
            _ => {}
        }
    }
}

/// A JSON refusal `{"error": reason}`.
pub fn json_error(status: StatusCode, reason: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": reason }).to_string();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What a client is told when its message signature is refused: what to fix where that is
/// the client's own clock or set-up, and no more than "refused" where telling more would
/// only help a forger (which check failed stays in the metric label and the log).
fn signature_refusal(rejection: &SignatureRejection) -> &'static str {
    use SignatureRejection as R;
    match rejection {
        R::MissingHeader(_) => {
            "this route requires a message signature; the sending node's sidecar adds it \
             (HTTP_PROXY)"
        }
        R::Stale { .. } | R::Future { .. } => {
            "the message signature's timestamp is outside the accepted window: check the \
             sending node's clock"
        }
        _ => "message signature refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_signature_tells_the_sender_what_it_can_fix_and_a_forger_nothing() {
        use trust_core::SignatureRejection as R;
        let forged = signature_refusal(&R::BadSignature);
        for hidden in [
            R::BadSignature,
            R::SaltLength,
            R::SignerNotPeer,
            R::FingerprintMismatch,
            R::DestinationMismatch,
            R::Replayed,
        ] {
            assert_eq!(signature_refusal(&hidden), forged, "{hidden:?}");
        }
        assert_eq!(forged, "message signature refused");
        assert!(signature_refusal(&R::Stale { age: 400 }).contains("clock"));
        assert!(signature_refusal(&R::Future { ahead: 400 }).contains("clock"));
        assert!(!signature_refusal(&R::Stale { age: 400 }).contains("400"));
        assert!(
            signature_refusal(&R::MissingHeader("x-signature"))
                .contains("requires a message signature")
        );
    }

    #[test]
    fn each_refusal_is_counted_under_its_outcome_and_its_reason() {
        let metrics = Metrics::new();
        let cases = [
            (
                Refusal::Unreadable {
                    label: "encoded_dot",
                    reason: "x".into(),
                },
                Direction::Ingress,
                400,
            ),
            (
                Refusal::SignatureWithoutCertificate,
                Direction::Ingress,
                401,
            ),
            (Refusal::AppTimeout, Direction::Ingress, 504),
            (Refusal::PeerCertificate("e".into()), Direction::Egress, 502),
            (
                Refusal::Policy {
                    status: 200,
                    reason: "no".into(),
                    by: "p@1".into(),
                    signature: Some("replayed"),
                },
                Direction::Ingress,
                403,
            ),
        ];
        for (refusal, direction, status) in cases {
            let outcome = refusal.outcome();
            let before = metrics
                .requests
                .with_label_values(&[direction.label(), outcome])
                .get();
            let response = refusal.respond(direction, &metrics, None);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                metrics
                    .requests
                    .with_label_values(&[direction.label(), outcome])
                    .get(),
                before + 1
            );
        }
        assert_eq!(
            metrics
                .bad_requests
                .with_label_values(&["encoded_dot"])
                .get(),
            1
        );
        for reason in ["anonymous", "replayed"] {
            assert_eq!(
                metrics
                    .signature_failures
                    .with_label_values(&[reason])
                    .get(),
                1
            );
        }
        for (direction, kind) in [("ingress", "timeout"), ("egress", "peer_certificate")] {
            assert_eq!(
                metrics
                    .upstream_errors
                    .with_label_values(&[direction, kind])
                    .get(),
                1
            );
        }
    }

    #[test]
    fn a_body_left_unread_closes_the_connection() {
        let metrics = Metrics::new();
        let closed =
            Refusal::BodyTooLarge { close: true }.respond(Direction::Ingress, &metrics, None);
        assert_eq!(closed.headers()[CONNECTION], "close");
        let kept =
            Refusal::BodyTooLarge { close: false }.respond(Direction::Ingress, &metrics, None);
        assert!(kept.headers().get(CONNECTION).is_none());
    }
}
