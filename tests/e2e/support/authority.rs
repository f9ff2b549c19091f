//! A typed client of the authority's `/trust/*` API, as the tests reach it (plain HTTP on
//! loopback, straight to the authority): answers come back as `trust_api`'s types, the
//! same the authority serialises and the sidecar reads, so a test cannot misspell a field.

use trust_api::{RevokeResponse, StatusResponse};

/// The authority at one URL.
pub struct AuthorityApi {
    url: String,
    http: reqwest::Client,
}

impl AuthorityApi {
    /// The authority at `url` (`http://<address>`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /trust/revoke/{id}`; panics unless it is answered 200.
    pub async fn revoke(&self, id: u32) -> RevokeResponse {
        let answer = self
            .http
            .post(format!("{}/trust/revoke/{id}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "revoking node {id}");
        answer.json().await.unwrap()
    }

    /// `GET /trust/nodes`; panics unless it is answered 200.
    pub async fn nodes(&self) -> Vec<trust_api::NodeSummary> {
        let answer = self
            .http
            .get(format!("{}/trust/nodes", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "nodes");
        answer
            .json::<trust_api::NodesResponse>()
            .await
            .unwrap()
            .nodes
    }

    /// `GET /trust/status`; panics unless it is answered 200.
    pub async fn status(&self) -> StatusResponse {
        let answer = self
            .http
            .get(format!("{}/trust/status", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "status");
        answer.json().await.unwrap()
    }
}
