//! What running sidecars declare: each signed CRL poll marks its node live at the
//! authority with its role and host, and the example aggregator's `ROUND_QUORUM=auto`
//! follows the live agents, so a scaled-up network waits for every agent.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::net::{InProcess, Net, eventually};
use crate::support::{Served, python, repo_root};

/// An in-process sidecar for node `id` declaring `role`.
async fn declared(net: &Net, id: u32, role: &str) -> InProcess {
    let mut config = net.config(id, "127.0.0.1:9", &[]);
    config.role = Some(role.to_owned());
    InProcess::start(config).await
}

async fn model(aggregator: &str) -> Value {
    reqwest::get(format!("http://{aggregator}/fl/model"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_sidecars_are_counted_live_by_role_and_the_aggregator_quorum_follows_them() {
    let net = Net::start(&[]);
    let mut sidecars = Vec::new();
    for id in 1..=3 {
        sidecars.push(declared(&net, id, "agent").await);
    }
    sidecars.push(declared(&net, 1000, "aggregator").await);

    let status = net.api().status().await;
    assert_eq!(status.live_nodes, 4, "{status:?}");
    assert_eq!(status.by_role["agent"].live, 3, "{status:?}");
    assert_eq!(status.by_role["aggregator"].live, 1, "{status:?}");
    let host = sidecar::authority_client::host_name();
    assert!(
        host.is_some(),
        "this machine's host name is one a node may declare"
    );
    for node in net.api().nodes().await {
        assert!(node.live, "{node:?}");
        assert_eq!(node.host, host, "{node:?}");
        assert!(node.names.contains(&"127.0.0.1".to_owned()), "{node:?}");
    }

    // The aggregator reads the live agents from the authority: its quorum is 3, and a
    // round closes on the third update, not at the default five.
    let mut cmd = python();
    cmd.arg(repo_root().join("deploy/apps/aggregator.py"))
        .env("LISTEN", "127.0.0.1:0")
        .env("ROUND_QUORUM", "auto")
        .env("QUORUM_REFRESH", "0.2")
        .env("ROUND_TIMEOUT", "600")
        .env("AUTHORITY_URL", &net.url)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    let app = Served::spawn(cmd, net.tmp.path().join("aggregator.log"), &[""]);
    let aggregator = app.addrs[""].clone();
    let at = aggregator.as_str();
    eventually(
        Duration::from_secs(20),
        "the quorum follows 3 agents",
        || async move { model(at).await["quorum"] == 3 },
    )
    .await;
    let http = reqwest::Client::new();
    for id in 1..=3 {
        let answer = http
            .post(format!("http://{aggregator}/fl/update"))
            .header("X-Verified-Node-Id", id.to_string())
            .json(&json!({"round": 1, "weights": [1.0, 2.0], "samples": 10}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(
        model(at).await["round"],
        2,
        "the third update closed round 1"
    );

    // A fourth agent starts: the quorum rises with it.
    sidecars.push(declared(&net, 4, "agent").await);
    eventually(
        Duration::from_secs(20),
        "the quorum follows 4 agents",
        || async move { model(at).await["quorum"] == 4 },
    )
    .await;
    for sidecar in sidecars {
        sidecar.stop().await.unwrap();
    }
}
