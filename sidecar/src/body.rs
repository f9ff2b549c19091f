//! The body types the ingress and egress pass on: requests to the app, responses to
//! callers. Kept apart so the request path's modules share them without importing each
//! other.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};

/// Error type of bodies sent to the app.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of requests forwarded to the app.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;
/// Body of responses the sidecar sends.
pub type ResponseBody = BoxBody<Bytes, BoxError>;

/// A complete body as a [`ResponseBody`].
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
