//! Starts an authority on 127.0.0.1:0 over a temp state directory and talks to it.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use authority::{Authority, AuthorityConfig, Secret};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trust_core::{NodeKey, UnixTime};

pub const TOKEN: &str = "test-bootstrap-token-0123456789";

pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    )
}

pub struct Server {
    pub url: String,
    pub client: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves the state in `dir` (creating a root on first start).
    pub async fn start(dir: &Path) -> Server {
        Self::start_scoped(dir, authority::Scope::Full).await
    }

    /// As [`Self::start`], serving only what `scope` allows.
    pub async fn start_scoped(dir: &Path, scope: authority::Scope) -> Server {
        let config = AuthorityConfig::new(dir.to_owned(), Secret::new(TOKEN));
        let (authority, _) = tokio::task::spawn_blocking(move || Authority::open(config, now()))
            .await
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let serve = authority::run_scoped(listener, Arc::new(authority), stop.clone(), scope);
        let task = tokio::spawn(async move { serve.await.unwrap() });
        Server {
            url,
            client: reqwest::Client::new(),
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting, drains, and waits for the server task.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.url));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The body of `GET path` as text (PEM, metrics).
    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn status(&self) -> Value {
        let (code, body) = self.get("/trust/status").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Enrolls a new node: its key, the enrollment answer, and a signer for it.
    pub async fn enrolled_node(&self) -> (NodeKey, Value, trust_core::MessageSigner) {
        let (key, csr) = key_and_csr().await;
        let (code, answer) = self.enroll(&csr, None).await;
        assert_eq!(code, 200, "{answer}");
        let id = answer["node_id"].as_str().unwrap().parse().unwrap();
        let signer = signer_for(&key, id, answer["certificate"].as_str().unwrap());
        (key, answer, signer)
    }

    /// Enrolls a CSR; returns status and body.
    pub async fn enroll(&self, csr: &str, node_id: Option<Value>) -> (u16, Value) {
        let mut body = json!({"csr": csr, "token": TOKEN});
        if let Some(id) = node_id {
            body["node_id"] = id;
        }
        self.post("/trust/enroll", Some(body)).await
    }
}

/// A fresh RSA-2048 key and its CSR for localhost (keygen on the blocking pool).
pub async fn key_and_csr() -> (NodeKey, String) {
    tokio::task::spawn_blocking(|| {
        let key = NodeKey::generate().unwrap();
        let csr = key
            .certificate_request("node", &["localhost".into()], &[])
            .unwrap();
        (key, csr)
    })
    .await
    .unwrap()
}

/// Signs requests as node `id` with `key` and its certificate `cert_pem`.
pub fn signer_for(key: &NodeKey, id: u32, cert_pem: &str) -> trust_core::MessageSigner {
    let key = NodeKey::from_pkcs8_der(key.pkcs8_der().secret_pkcs8_der()).unwrap();
    let der = pem::parse(cert_pem).unwrap().into_contents();
    trust_core::MessageSigner::new(
        key,
        &trust_core::Subject::Node(trust_core::NodeId::new(id).unwrap()),
        &der,
    )
}
