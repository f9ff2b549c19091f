//! Authority load figures for docs/BENCHMARKS.md: enroll 100 and 1000 nodes over HTTP
//! (client key generation included and excluded), `/trust/status` latency with 1000
//! nodes, how fast a CRL long poll wakes after a revocation, and the same network with
//! every node holding a signed, announcing long poll (live counts, one revocation waking
//! them all).
//!
//! `cargo bench -p authority --bench enroll` (about 2 minutes on 2 cores).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use authority::{Authority, AuthorityConfig, Secret};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use trust_core::{NodeKey, UnixTime};

const TOKEN: &str = "bench-bootstrap-token-0123456789";
const CONCURRENCY: usize = 16;

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    )
}

async fn start(dir: &std::path::Path) -> (String, CancellationToken) {
    let config = AuthorityConfig::new(dir.to_owned(), Secret::new(TOKEN));
    let (authority, _) = tokio::task::spawn_blocking(move || Authority::open(config, now()))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serve = authority::run(listener, Arc::new(authority), stop.clone());
    tokio::spawn(async move { serve.await.unwrap() });
    (url, stop)
}

fn csr() -> String {
    NodeKey::generate()
        .unwrap()
        .certificate_request("n", &["localhost".into()], &[])
        .unwrap()
}

/// Enrolls `n` nodes with CONCURRENCY clients; returns the wall time until all are
/// enrolled and `/trust/status` reports them verified, and each enrollment's answer in
/// the order of `pregenerated`.
async fn enroll(url: &str, n: usize, pregenerated: Option<Vec<String>>) -> (Duration, Vec<Value>) {
    let client = reqwest::Client::new();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut csrs = pregenerated.map(|v| v.into_iter());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let given = csrs.as_mut().and_then(Iterator::next);
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let csr = match given {
                Some(c) => c,
                None => tokio::task::spawn_blocking(csr).await.unwrap(),
            };
            let r = client
                .post(format!("{url}/trust/enroll"))
                .json(&json!({"csr": csr, "token": TOKEN}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            drop(permit);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut answers = Vec::with_capacity(n);
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let status = status(&client, url).await;
    assert_eq!(status["verified_nodes"].as_u64(), Some(n as u64));
    (started.elapsed(), answers)
}

/// Every node holds a signed CRL long poll declaring `role=agent`, as each running
/// sidecar does. Measures `/trust/status` while they are held, then how long one
/// revocation takes to answer every held poll.
async fn held_polls(url: &str, signers: Vec<trust_core::MessageSigner>) {
    let n = signers.len();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let host = url.trim_start_matches("http://").to_owned();
    let etag = client
        .get(format!("{url}/trust/crl"))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let path = "/trust/crl?wait=60&role=agent&host=bench".to_owned();
    let sign_started = Instant::now();
    let signed: Vec<Vec<(String, String)>> = {
        let (host, path) = (host.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            signers
                .iter()
                .map(|s| {
                    let parts = trust_core::RequestParts::new("GET", &host, &path, b"");
                    s.sign(&parts, now())
                        .unwrap()
                        .pairs()
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect()
                })
                .collect()
        })
        .await
        .unwrap()
    };
    let signing = sign_started.elapsed();
    let mut polls = Vec::with_capacity(n);
    for headers in signed {
        let mut req = client
            .get(format!("{url}{path}"))
            .header("If-None-Match", &etag)
            .header("Accept", "application/pkix-crl");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        polls.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "woken by the new CRL");
            let _ = r.bytes().await.unwrap();
            Instant::now()
        }));
    }
    // Every poll has been heard (announced) once status counts them all live.
    let held_since = Instant::now();
    loop {
        let status = status(&client, url).await;
        if status["by_role"]["agent"]["live"].as_u64() == Some(n as u64) {
            break;
        }
        assert!(held_since.elapsed() < Duration::from_secs(50), "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let announced = held_since.elapsed();
    let mut samples = Vec::new();
    for _ in 0..100 {
        let s = Instant::now();
        let r = client
            .get(format!("{url}/trust/status"))
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        samples.push(s.elapsed());
    }
    let (p50, p95, max) = percentiles(samples);
    let sent = Instant::now();
    let r = client
        .post(format!("{url}/trust/revoke/{n}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut woken = Vec::with_capacity(n);
    for p in polls {
        woken.push(p.await.unwrap().duration_since(sent));
    }
    let (w50, w95, wmax) = percentiles(woken);
    println!(
        "| {n} signed CRL polls (role=agent) signed by their nodes, client side | {:.2} s ({:.2} ms each) | |",
        signing.as_secs_f64(),
        signing.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "| {n} signed long polls sent until all counted live (`by_role.agent.live`) | {:.2} s | |",
        announced.as_secs_f64()
    );
    println!(
        "| `GET /trust/status` with {n} nodes holding signed long polls | p50 {p50:.1?}, p95 {p95:.1?}, max {max:.1?} | |"
    );
    println!(
        "| all {n} held long polls answered after one revocation, from the revoke sent | p50 {w50:.1?}, p95 {w95:.1?}, max {wmax:.1?} | |"
    );
}

/// `GET /trust/status` as JSON.
async fn status(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(format!("{url}/trust/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (p(0.5), p(0.95), v[v.len() - 1])
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("| what | figure | budget |");
        println!("|---|---|---|");
        for n in [100usize, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let (url, stop) = start(dir.path()).await;
            let (t, _) = enroll(&url, n, None).await;
            println!("| enroll and verify {n} nodes, client keygen included ({CONCURRENCY} clients) | {:.2} s | {} |", t.as_secs_f64(), if n == 100 { "<= 5 s" } else { "<= 60 s" });
            stop.cancel();

            let dir = tempfile::tempdir().unwrap();
            let (url, stop) = start(dir.path()).await;
            let keys: Vec<(NodeKey, String)> = tokio::task::spawn_blocking(move || {
                (0..n)
                    .map(|_| {
                        let key = NodeKey::generate().unwrap();
                        let csr = key.certificate_request("n", &["localhost".into()], &[]).unwrap();
                        (key, csr)
                    })
                    .collect()
            })
            .await
            .unwrap();
            let pre = keys.iter().map(|(_, csr)| csr.clone()).collect();
            let (t, answers) = enroll(&url, n, Some(pre)).await;
            println!("| enroll and verify {n} nodes, keys made beforehand | {:.2} s | |", t.as_secs_f64());
            if n == 1000 {
                let client = reqwest::Client::new();
                let mut samples = Vec::new();
                for _ in 0..200 {
                    let s = Instant::now();
                    let r = client.get(format!("{url}/trust/status")).send().await.unwrap();
                    let _ = r.bytes().await.unwrap();
                    samples.push(s.elapsed());
                }
                let (p50, p95, max) = percentiles(samples);
                println!("| `GET /trust/status` with 1000 nodes (all verified, cached) | p50 {p50:.1?}, p95 {p95:.1?}, max {max:.1?} | |");

                let mut wake = Vec::new();
                let mut revoke = Vec::new();
                for id in 1..=20 {
                    let etag = client.get(format!("{url}/trust/crl")).send().await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
                    let waiter = {
                        let (client, url) = (client.clone(), url.clone());
                        tokio::spawn(async move {
                            let r = client.get(format!("{url}/trust/crl?wait=30")).header("If-None-Match", etag).send().await.unwrap();
                            assert_eq!(r.status(), 200);
                            let _ = r.bytes().await.unwrap();
                            Instant::now()
                        })
                    };
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(20)).await; // let the poll reach the server (benchmark only)
                    let sent = Instant::now();
                    let r = client.post(format!("{url}/trust/revoke/{id}")).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    revoke.push(sent.elapsed());
                    wake.push(waiter.await.unwrap().duration_since(sent));
                }
                let (w50, w95, wmax) = percentiles(wake);
                let (r50, r95, _) = percentiles(revoke);
                println!("| revocation answered (persist + new CRL signed) | p50 {r50:.1?}, p95 {r95:.1?} | |");
                println!("| CRL long poll woken, from the revoke request sent | p50 {w50:.1?}, p95 {w95:.1?}, max {wmax:.1?} | wake-up <= 100 ms |");

                // Nodes 1..=20 are revoked now; the others hold signed polls.
                let signers = keys
                    .into_iter()
                    .zip(answers)
                    .filter(|(_, answer)| answer["node_id"].as_str().unwrap().parse::<u32>().unwrap() > 20)
                    .map(|((key, _), answer)| {
                        let id: u32 = answer["node_id"].as_str().unwrap().parse().unwrap();
                        let der = pem::parse(answer["certificate"].as_str().unwrap()).unwrap().into_contents();
                        trust_core::MessageSigner::new(
                            key,
                            &trust_core::Subject::Node(trust_core::NodeId::new(id).unwrap()),
                            &der,
                        )
                    })
                    .collect();
                held_polls(&url, signers).await;
            }
            stop.cancel();
        }
    });
}
