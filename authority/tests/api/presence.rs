//! Live nodes and declared roles: a CRL poll signed by a node marks it live and files the
//! role and host it declares; an unsigned, forged, tampered or revoked node's poll still
//! gets the CRL but changes nothing; `/trust/status` counts live nodes by role and
//! `/trust/nodes` shows each node's names, role and host.

use serde_json::Value;
use trust_core::MessageSigner;

use crate::server::{Server, now, signer_for};

/// `GET /trust/crl?wait=0<query>` signed by `signer` (as its own node), with `tamper`
/// applied to the path and query after signing. The CRL's status code.
async fn poll(s: &Server, signer: Option<&MessageSigner>, query: &str, tamper: &str) -> u16 {
    let path = format!("/trust/crl?wait=0{query}");
    let host = s.url.trim_start_matches("http://").to_owned();
    let mut req = s
        .client
        .get(format!("{}{path}{tamper}", s.url))
        .header("accept", "application/pkix-crl");
    if let Some(signer) = signer {
        let parts = trust_core::RequestParts::new("GET", &host, &path, b"");
        for (name, value) in signer.sign(&parts, now()).unwrap().pairs() {
            req = req.header(name, value);
        }
    }
    req.send().await.unwrap().status().as_u16()
}

async fn node(s: &Server, id: u32) -> Value {
    let (code, body) = s.get("/trust/nodes").await;
    assert_eq!(code, 200, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"].as_str().and_then(|s| s.parse().ok()) == Some(id))
        .cloned()
        .unwrap_or_else(|| panic!("no node {id} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_polls_mark_nodes_live_with_their_role_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (_, a, signer_a) = s.enrolled_node().await;
    let (key_m, _, signer_m) = s.enrolled_node().await;
    // Posing as node 1 with node 2's key: the signature does not verify for node 1.
    let forged_a = signer_for(&key_m, 1, a["certificate"].as_str().unwrap());

    // Enrolling is being heard from; nobody has declared a role yet.
    let status = s.status().await;
    assert_eq!(status["live_nodes"], 2, "{status}");
    assert_eq!(status["live_window_seconds"], 90, "{status}");
    assert_eq!(status["by_role"]["unknown"]["live"], 2, "{status}");

    // Node 1 declares itself; its listing shows it, with its certificate's names.
    assert_eq!(
        poll(&s, Some(&signer_a), "&role=agent&host=host-a", "").await,
        200
    );
    let one = node(&s, 1).await;
    assert_eq!(
        (&one["role"], &one["host"], &one["live"]),
        (&"agent".into(), &"host-a".into(), &true.into()),
        "{one}"
    );
    assert!(
        one["names"]
            .as_array()
            .unwrap()
            .contains(&"localhost".into()),
        "{one}"
    );

    // Each of these still gets the CRL (it is public) but changes no declaration: no
    // signature, a forged one, a query changed after signing, a value out of bounds.
    for (signer, query, tamper) in [
        (None, "&role=aggregator&host=x", ""),
        (Some(&forged_a), "&role=aggregator&host=x", ""),
        (
            Some(&signer_a),
            "&role=agent&host=host-a",
            "&role=aggregator",
        ),
        (Some(&signer_a), "&role=Agg%26regator&host=x", ""),
        (Some(&signer_a), "&role=agent&host=a%2Fb", ""),
    ] {
        assert_eq!(
            poll(&s, signer, query, tamper).await,
            200,
            "{query}{tamper}"
        );
        let one = node(&s, 1).await;
        assert_eq!(
            (&one["role"], &one["host"]),
            (&"agent".into(), &"host-a".into()),
            "{query}{tamper}: {one}"
        );
    }

    assert_eq!(poll(&s, Some(&signer_m), "&role=aggregator", "").await, 200);
    let status = s.status().await;
    assert_eq!(status["live_nodes"], 2, "{status}");
    assert_eq!(
        (
            &status["by_role"]["agent"]["live"],
            &status["by_role"]["aggregator"]["live"]
        ),
        (&1.into(), &1.into()),
        "{status}"
    );
    assert!(status["by_role"].get("unknown").is_none(), "{status}");

    // A revoked node is not live, whatever it sends; its role still counts it.
    let (code, _) = s.post("/trust/revoke/2", None).await;
    assert_eq!(code, 200);
    assert_eq!(poll(&s, Some(&signer_m), "&role=aggregator", "").await, 200);
    let status = s.status().await;
    assert_eq!(status["live_nodes"], 1, "{status}");
    let aggregators = &status["by_role"]["aggregator"];
    assert_eq!(
        (
            &aggregators["total"],
            &aggregators["verified"],
            &aggregators["live"]
        ),
        (&1.into(), &0.into(), &0.into()),
        "{status}"
    );
    assert_eq!(node(&s, 2).await["live"], false);
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("tpm_live_nodes{role=\"agent\"} 1")
            && metrics.contains("tpm_live_nodes{role=\"aggregator\"} 0"),
        "{metrics}"
    );
    s.stop().await;
}
