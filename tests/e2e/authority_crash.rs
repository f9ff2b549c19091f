//! Nothing the authority acknowledged is lost: clients enroll and revoke while the real
//! process is killed with SIGKILL at random moments; after each restart every acknowledged
//! enrollment and revocation is there. Also: SIGTERM drains and exits 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use trust_core::NodeKey;

use crate::support::AuthorityProcess;

const TOKEN: &str = "crash-test-token-0123456789abcdef";

#[derive(Default)]
struct Acknowledged {
    /// node id -> certificate PEM
    enrolled: HashMap<String, String>,
    revoked: Vec<String>,
    count: usize,
}

/// A small xorshift so each run kills at different moments without a rand dependency.
struct Dice(u64);
impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn acknowledged_enrollments_and_revocations_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("authority");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut dice = Dice(seed);
    eprintln!("crash test seed {seed}");

    let csrs: Vec<String> = (0..48)
        .map(|_| {
            NodeKey::generate()
                .unwrap()
                .certificate_request("n", &["localhost".into()], &[])
                .unwrap()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Acknowledged::default()));

    for round in 0..4 {
        let authority = AuthorityProcess::start(&state, &token);
        let kill_after = {
            let a = acked.lock().unwrap();
            a.count + 1 + dice.roll(8) as usize
        };
        let batch: Vec<String> = csrs[round * 12..(round + 1) * 12].to_vec();
        let to_revoke: Vec<String> = acked
            .lock()
            .unwrap()
            .enrolled
            .keys()
            .take(2 + round)
            .cloned()
            .collect();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let mut tasks = Vec::new();
            for csr in batch {
                let (client, url, acked) =
                    (client.clone(), authority.url.clone(), Arc::clone(&acked));
                tasks.push(tokio::spawn(async move {
                    let Ok(r) = client
                        .post(format!("{url}/trust/enroll"))
                        .json(&json!({"csr": csr, "token": TOKEN}))
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != 200 {
                        return;
                    }
                    let Ok(body) = r.json::<Value>().await else {
                        return;
                    };
                    let mut a = acked.lock().unwrap();
                    a.enrolled.insert(
                        body["node_id"].as_str().unwrap().to_owned(),
                        body["certificate"].as_str().unwrap().to_owned(),
                    );
                    a.count += 1;
                }));
            }
            for id in to_revoke {
                let (client, url, acked) =
                    (client.clone(), authority.url.clone(), Arc::clone(&acked));
                tasks.push(tokio::spawn(async move {
                    let Ok(r) = client.post(format!("{url}/trust/revoke/{id}")).send().await else {
                        return;
                    };
                    if r.status() != 200 {
                        return;
                    }
                    let mut a = acked.lock().unwrap();
                    a.revoked.push(id);
                    a.count += 1;
                }));
            }
            // Kill once enough operations were acknowledged, with the rest still in flight.
            loop {
                if acked.lock().unwrap().count >= kill_after
                    || tasks.iter().all(|t| t.is_finished())
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
        // Requests cut off by the kill fail; they were never acknowledged.
        authority.kill9();

        // Restart and check everything acknowledged so far.
        let authority = AuthorityProcess::start(&state, &token);
        let a = acked.lock().unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            for (id, cert) in &a.enrolled {
                let r: Value = client
                    .get(format!("{}/trust/certificate/{id}", authority.url))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    r["certificate"].as_str(),
                    Some(cert.as_str()),
                    "round {round}: node {id}'s certificate (seed {seed})"
                );
            }
            for id in &a.revoked {
                let r: Value = client
                    .post(format!("{}/trust/verify/{id}", authority.url))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    r["reason"], "revoked",
                    "round {round}: node {id} must stay revoked (seed {seed})"
                );
            }
        });
        drop(a);
        authority.kill9();
    }
    assert!(
        acked.lock().unwrap().count >= 4,
        "the test acknowledged too little to mean anything"
    );
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut authority = AuthorityProcess::start(&dir.path().join("authority"), &token);
    // bash's built-in kill, by PID: no procps package needed on a fresh machine.
    let status = std::process::Command::new("bash")
        .args(["-c", &format!("kill -TERM {}", authority.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = authority.wait();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
