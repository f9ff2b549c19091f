//! Shutdown: on SIGTERM a sidecar lets in-flight requests finish, refuses new connections
//! and exits 0.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::net::{How, Net, eventually, sigterm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0() {
    let net = Net::start(&[]);
    let (a, mut b) = net.two_nodes(How::Process).await;
    let slow = {
        let app = a.app.as_ref().unwrap().addr("").to_owned();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{app}/call"))
                .json(&json!({"method": "GET", "url": "http://node-1/slow?s=3", "json": null}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The slow request has reached B.
    b.wait_metric("tpm_connections_active", 1.0, Duration::from_secs(10))
        .await;
    sigterm(b.sidecar.process().child.id());
    let ingress = b.sidecar.addr("ingress").to_owned();
    let ingress_ref = &ingress;
    eventually(
        Duration::from_secs(5),
        "B stops accepting",
        move || async move { tokio::net::TcpStream::connect(ingress_ref).await.is_err() },
    )
    .await;
    assert!(!slow.is_finished(), "the slow request is still in flight");
    let answer = slow.await.unwrap();
    assert_eq!(
        answer["status"], 200,
        "the in-flight request completed: {answer}"
    );
    let served = b.sidecar.process();
    let status = served.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", served.log_text());
    b.app.take();
}
