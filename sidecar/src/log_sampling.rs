//! The log events a client can cause at the sidecar, sampled by the `log-sampling` crate
//! ([`LogSampler`]): per kind and 10 s window the first event from each remote address is
//! logged in full, five addresses at most, the rest counted in
//! `tpm_log_lines_suppressed_total{event}` and summed up in one line when the window
//! closes. The counters of the events themselves (`tpm_tls_handshake_failures_total`,
//! `tpm_requests_total`, ...) keep every one.

pub use log_sampling::{DETAILED_PER_WINDOW, EventKind, WINDOW};

/// The sidecar's sampler.
pub type LogSampler = log_sampling::LogSampler<Event>;

/// The kinds of log event a client can cause; the `event` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A TLS handshake refused (bad or unknown certificate, protocol error).
    TlsHandshakeRefused,
    /// A TLS handshake not finished within its deadline.
    TlsHandshakeTimeout,
    /// A resumed session whose certificate is no longer trusted.
    PeerRefusedAfterHandshake,
    /// A request from a peer whose certificate stopped being trusted on its connection.
    PeerNoLongerTrusted,
    /// A message signature refused.
    SignatureRefused,
    /// A policy plugin's denial.
    PolicyDenied,
    /// The app or a peer could not be reached or failed.
    UpstreamFailed,
    /// An outbound request could not be signed.
    SigningFailed,
}

impl log_sampling::EventKind for Event {
    const ALL: &'static [Self] = &[
        Self::TlsHandshakeRefused,
        Self::TlsHandshakeTimeout,
        Self::PeerRefusedAfterHandshake,
        Self::PeerNoLongerTrusted,
        Self::SignatureRefused,
        Self::PolicyDenied,
        Self::UpstreamFailed,
        Self::SigningFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::TlsHandshakeRefused => "tls_handshake_refused",
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::PeerRefusedAfterHandshake => "peer_refused_after_handshake",
            Self::PeerNoLongerTrusted => "peer_no_longer_trusted",
            Self::SignatureRefused => "signature_refused",
            Self::PolicyDenied => "policy_denied",
            Self::UpstreamFailed => "upstream_failed",
            Self::SigningFailed => "signing_failed",
        }
    }
}
