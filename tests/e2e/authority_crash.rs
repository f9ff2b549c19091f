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

/// A new RSA-2048 key's CSR, as a node makes it.
fn new_csr() -> String {
    NodeKey::generate()
        .unwrap()
        .certificate_request("n", &["localhost".into()], &[])
        .unwrap()
}

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

    let csrs: Vec<String> = (0..48).map(|_| new_csr()).collect();
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
            // One revocation acknowledged before the storm, so every round after the first
            // checks at least one revocation across a kill -9.
            let first = {
                let a = acked.lock().unwrap();
                a.enrolled
                    .keys()
                    .find(|id| !a.revoked.contains(id))
                    .cloned()
            };
            if let Some(id) = first {
                let r = client
                    .post(format!("{}/trust/revoke/{id}", authority.url))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "round {round}: revoking node {id}");
                let mut a = acked.lock().unwrap();
                a.revoked.push(id);
                a.count += 1;
            }
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
    let a = acked.lock().unwrap();
    assert!(
        a.count >= 4,
        "the test acknowledged too little to mean anything"
    );
    assert!(
        a.revoked.len() >= 3,
        "every round after the first must check an acknowledged revocation"
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

/// A tmpfs of a given size on a fresh folder (root only), unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { path, _dir: dir })
    }

    fn grow(&self, kib: u32) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={kib}k")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.path.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_state_disk_refuses_with_507_loses_nothing_acknowledged_and_recovers() {
    let Some(disk) = SmallDisk::mount(64) else {
        // The test command runs as root (it installs packages); elsewhere say why.
        assert_ne!(
            rustix::process::geteuid().as_raw(),
            0,
            "root could not mount a tmpfs"
        );
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let state = disk.path.join("authority");
    let authority = AuthorityProcess::start(&state, &token);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let enroll = |url: &str, csr: &str| {
        runtime.block_on(async {
            let r = client
                .post(format!("{url}/trust/enroll"))
                .json(&json!({"csr": csr, "token": TOKEN}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let get = |url: String| {
        runtime.block_on(async {
            let r = client.get(url).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        })
    };
    // Each node costs a registry line (~2.5 KiB): the 64 KiB disk fills within 40.
    let mut acknowledged = HashMap::new();
    let mut refusal = None;
    for _ in 0..40 {
        let csr = new_csr();
        let (code, body) = enroll(&authority.url, &csr);
        if code != 200 {
            refusal = Some((code, body));
            break;
        }
        acknowledged.insert(
            body["node_id"].as_str().unwrap().to_owned(),
            body["certificate"].as_str().unwrap().to_owned(),
        );
    }
    let (code, body) = refusal.expect("a 64 KiB disk filled up");
    assert_eq!(code, 507, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("disk is full"),
        "{body}"
    );
    assert!(
        acknowledged.len() >= 5,
        "the disk filled too early to mean anything"
    );
    // Reads still work on a full disk, and count exactly what was acknowledged.
    let status = get(format!("{}/trust/status", authority.url));
    assert_eq!(
        status["total_nodes"].as_u64(),
        Some(acknowledged.len() as u64)
    );
    // The operator frees space: the running authority enrolls again at once (no restart),
    // and a restart on the same state finds everything acknowledged, before and after.
    disk.grow(1024);
    let csr = new_csr();
    let (code, body) = enroll(&authority.url, &csr);
    assert_eq!(code, 200, "{body}");
    acknowledged.insert(
        body["node_id"].as_str().unwrap().to_owned(),
        body["certificate"].as_str().unwrap().to_owned(),
    );
    authority.kill9();
    let authority = AuthorityProcess::start(&state, &token);
    for (id, cert) in &acknowledged {
        let r = get(format!("{}/trust/certificate/{id}", authority.url));
        assert_eq!(r["certificate"].as_str(), Some(cert.as_str()), "node {id}");
    }
    authority.kill9();
}
