//! The sidecar's calls to the trust authority, over one HTTP client: the CA certificate,
//! enrolment, renewal, and the CRL (at once, or as a long poll; what is done with it lives
//! in [`crate::crl_source`]).
//!
//! Answers are checked by the caller against the root (certificates) or verified by the
//! trust cache (CRLs); this module only moves bytes and turns the authority's JSON errors
//! into [`Error`]s that say what to do.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use trust_api::EnrollResponse;
use trust_core::{MessageSigner, RequestParts, UnixTime};

use crate::error::{Result, SidecarError as Error};

/// Largest answer read from the authority (a CRL of 100k serials is ~4 MiB).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// What a CRL request got.
#[derive(Debug)]
pub enum CrlAnswer {
    /// No CRL other than the one named was published while the authority held the poll.
    Unchanged,
    /// A CRL (DER, not yet verified) and its ETag.
    New {
        /// The CRL, DER.
        der: Bytes,
        /// Its ETag, for the next poll.
        etag: Option<String>,
    },
}

/// A client for one authority base URL.
pub struct AuthorityClient {
    base: String,
    host: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl AuthorityClient {
    /// A client for `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| Error::Config(format!("config `authority.url`: {e}")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| Error::Config("config `authority.url`: no host".into()))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Self {
            base,
            host,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(30),
        })
    }

    /// The authority's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET /trust/status`: `{total_nodes, verified_nodes, ...}`.
    pub async fn status(&self) -> Result<serde_json::Value> {
        let body = self
            .call(Method::GET, "/trust/status", Vec::new(), &[])
            .await?;
        json(&body, "/trust/status")
    }

    /// `GET /trust/nodes`: every enrolled node, its current certificate and status (the
    /// API's full listener only).
    pub async fn nodes(&self) -> Result<Vec<trust_api::NodeSummary>> {
        let body = self
            .call(Method::GET, "/trust/nodes", Vec::new(), &[])
            .await?;
        json::<trust_api::NodesResponse>(&body, "/trust/nodes").map(|r| r.nodes)
    }

    /// `GET /trust/ca-certificate`: the root, PEM.
    pub async fn ca_certificate(&self) -> Result<String> {
        let answer = self
            .call(Method::GET, "/trust/ca-certificate", Vec::new(), &[])
            .await?;
        let value: serde_json::Value = json(&answer, "/trust/ca-certificate")?;
        value["certificate"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.unexpected("/trust/ca-certificate", "no `certificate` field"))
    }

    /// `GET /trust/crl` as DER: at once without `etag`; with it, held by the authority up
    /// to `wait` until a CRL other than `etag` is published. With `announce`, the poll is
    /// signed by the node and declares its role and host (the authority counts it live).
    pub async fn crl(
        &self,
        etag: Option<&str>,
        wait: Duration,
        announce: Option<&Announcement<'_>>,
    ) -> Result<CrlAnswer> {
        let held = if etag.is_some() { wait } else { Duration::ZERO };
        let path = {
            // The serializer is not Send: gone before the first await.
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("wait", &held.as_secs().to_string());
            for (key, value) in [
                ("role", announce.and_then(|a| a.role)),
                ("host", announce.and_then(|a| a.host)),
            ] {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
            format!("/trust/crl?{}", query.finish())
        };
        let mut headers = vec![(ACCEPT.as_str(), "application/pkix-crl".to_owned())];
        if let Some(announce) = announce {
            let signed = announce
                .signer
                .sign(
                    &RequestParts::new("GET", &self.host, &path, b""),
                    UnixTime::now(),
                )
                .map_err(Error::Core)?;
            headers.extend(signed.pairs().iter().map(|(k, v)| (*k, (*v).to_owned())));
        }
        if let Some(etag) = etag {
            headers.push((IF_NONE_MATCH.as_str(), etag.to_owned()));
        }
        let (status, answer_headers, der) = self
            .exchange(
                Method::GET,
                &path,
                Vec::new(),
                &headers,
                held + self.timeout,
            )
            .await?;
        match status {
            StatusCode::NOT_MODIFIED => Ok(CrlAnswer::Unchanged),
            s if s.is_success() => Ok(CrlAnswer::New {
                der,
                etag: answer_headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }),
            s => Err(refusal(s, &der, "/trust/crl")),
        }
    }

    /// `POST /trust/enroll` with a CSR and the bootstrap token.
    pub async fn enroll(
        &self,
        csr_pem: &str,
        token: &str,
        node_id: Option<u32>,
    ) -> Result<EnrollResponse> {
        let mut body = serde_json::json!({ "csr": csr_pem, "token": token });
        if let Some(id) = node_id {
            body["node_id"] = id.into();
        }
        let answer = self
            .call(
                Method::POST,
                "/trust/enroll",
                body.to_string().into_bytes(),
                &[(CONTENT_TYPE.as_str(), "application/json".into())],
            )
            .await?;
        json(&answer, "/trust/enroll")
    }

    /// `POST /trust/renew`: a new CSR, signed with the current key and certificate.
    pub async fn renew(&self, signer: &MessageSigner, csr_pem: &str) -> Result<EnrollResponse> {
        let body = serde_json::json!({ "csr": csr_pem })
            .to_string()
            .into_bytes();
        let headers = signer
            .sign(
                &RequestParts::new("POST", &self.host, "/trust/renew", &body),
                UnixTime::now(),
            )
            .map_err(Error::Core)?;
        let mut extra: Vec<(&str, String)> = headers
            .pairs()
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        extra.push((CONTENT_TYPE.as_str(), "application/json".into()));
        let answer = self
            .call(Method::POST, "/trust/renew", body, &extra)
            .await?;
        json(&answer, "/trust/renew")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<Vec<u8>> {
        let (status, _, bytes) = self
            .exchange(method, path, body, headers, self.timeout)
            .await?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(refusal(status, &bytes, path))
    }

    /// One request; the answer's status, headers and body, or why there was none.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes)> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Config(format!("config `authority.url`: {e}")))?;
        let response = tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "the authority at {} did not answer {path} within {timeout:?}",
                    self.base
                ))
            })?
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot reach the authority at {} ({path}): {e}; check `authority.url` and that the authority is running",
                    self.base
                ))
            })?;
        let status = response.status();
        let (head, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                Error::Unavailable(format!("the authority's answer to {path} broke off: {e}"))
            })?
            .to_bytes();
        Ok((status, head.headers, bytes))
    }

    fn unexpected(&self, path: &str, what: &str) -> Error {
        Error::Service(format!(
            "the authority at {} answered {path} unexpectedly: {what}",
            self.base
        ))
    }
}

/// The error for an authority's answer `status` to `path`, with its `{"error": ...}`.
fn refusal(status: StatusCode, body: &[u8], path: &str) -> Error {
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| status.to_string());
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::CONFLICT => {
            Error::NotPermitted(format!(
                "the authority refused {path}: {reason} (check the bootstrap token and `node_id`)"
            ))
        }
        s if s.is_server_error() => Error::Unavailable(format!(
            "the authority failed {path}: {reason}; retry later"
        )),
        _ => Error::Service(format!("the authority refused {path}: {reason}")),
    }
}

/// What a node says with its CRL polls: signed with its key, so the authority counts it
/// live, and declaring its role and host name.
#[derive(Debug)]
pub struct Announcement<'a> {
    /// The node's current signer.
    pub signer: &'a MessageSigner,
    /// `role` from the config.
    pub role: Option<&'a str>,
    /// This machine's host name (a container id, a pod name).
    pub host: Option<&'a str>,
}

/// This machine's host name, when it is one the authority accepts
/// ([`trust_api::valid_host`]).
pub fn host_name() -> Option<String> {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    trust_api::valid_host(&name).then_some(name)
}

/// Delays between attempts to reach the authority: doubling from `first` up to `cap`,
/// each lengthened by a random part of itself, so that a fleet which lost the authority
/// at the same moment (a restart) does not come back at it in lockstep. Endless: the
/// caller decides when to give up.
pub fn retry_delays(first: Duration, cap: Duration) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder as _;
    backon::ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_jitter()
        .without_max_times()
        .build()
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::Service(format!(
            "the authority's answer to {path} is not the expected JSON: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_to_the_cap_each_with_its_own_random_part() {
        let (first, cap) = (Duration::from_secs(1), Duration::from_secs(30));
        let mut base = first;
        for delay in retry_delays(first, cap).take(12) {
            assert!(delay >= base && delay < base * 2, "{delay:?} for {base:?}");
            base = (base * 2).min(cap);
        }
        // A fleet that lost the authority at one moment does not retry in lockstep: 50
        // sidecars' first retries spread over the first delay's width.
        let firsts: Vec<Duration> = (0..50)
            .map(|_| retry_delays(first, cap).next().unwrap_or(first))
            .collect();
        let spread = firsts.iter().max().copied().unwrap_or_default()
            - firsts.iter().min().copied().unwrap_or_default();
        assert!(spread > first / 2, "first retries {firsts:?}");
    }
}
