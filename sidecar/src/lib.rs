//! # sidecar
//!
//! The trust proxy sidecar as a library: everything `trust-proxy run` does, with no
//! command line, no signal handling and no process around it. The binary (`proxy/`)
//! parses flags, installs the signal handlers and calls [`run`]; a test can do the same
//! in-process, with listeners it bound itself on `127.0.0.1:0`.
//!
//! ```no_run
//! # async fn example(config: sidecar::config::SidecarConfig) -> Result<(), sidecar::SidecarError> {
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let listeners = sidecar::Listeners::bind(&config).await?;
//! sidecar::run(listeners, config, shutdown).await
//! # }
//! ```
//!
//! # Where things are
//!
//! Start-up and the serving loop are in [`run`](mod@run). A request arriving at the
//! ingress goes, in this order, through:
//!
//! | step | module |
//! |---|---|
//! | accept, pick an ingress thread, TLS with client certificates | [`ingress`], [`placement`], [`tls`] |
//! | re-check the peer against the current CRL | [`ingress`] over `trust-core`'s trust cache |
//! | limits (headers, body, time; the first byte after the handshake: the `first-byte` crate) | [`ingress`] |
//! | the request's one reading: canonical path, one authority, identity headers from outside removed | [`request_view`] |
//! | the RSA-PSS message signature | [`ingress`] over `trust-core` |
//! | the policy chain | [`policy`] over `policy-host` |
//! | forward to the app with the verified identity headers | [`upstream`] |
//!
//! Any step may refuse: it returns a [`refusal::Refusal`], the one place that turns a
//! refusal into status, public reason, metric and log line. The outbound path is
//! [`egress`]: the app's plain HTTP in, signed mTLS out, refused with the same type.
//!
//! Around the request path:
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the TOML config, environment overrides, validation; serialisable, so tools write it too |
//! | [`credentials`] | the node key and certificate: enrolment, renewal, reload, rustls resolvers |
//! | [`authority_client`] | the one HTTP client to the authority: CA certificate, enroll, renew, CRL |
//! | [`crl_source`] | the CRL the sidecar trusts: the saved copy, the first fetch, the long poll; verified, installed, saved |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz` |
//! | [`metrics`] | the sidecar's Prometheus metrics, one registry per sidecar |
//! | [`log_sampling`] | refusals a client causes reach the log at a bounded rate; the metrics count every one |
//! | [`body`] | the body types the request path passes on |
//! | [`error`] | [`SidecarError`]: what stops the sidecar, and its exit code |

pub mod admin;
pub mod authority_client;
pub mod body;
pub mod config;
pub mod credentials;
pub mod crl_source;
pub mod egress;
pub mod error;
pub mod ingress;
pub mod log_sampling;
pub mod metrics;
pub mod placement;
pub mod policy;
pub mod refusal;
pub mod request_view;
pub mod run;
pub mod tls;
pub mod upstream;

pub use error::{Result, SidecarError};
pub use run::{Listeners, Reload, Sidecar, run};
