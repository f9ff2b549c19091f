//! Faults injected where they hurt: the real processes die by SIGKILL at a named crash
//! point (`trust_store::crash`, armed through `FAILPOINTS`) in the windows between two
//! durable steps, and each test checks that the window was hit (the process died there,
//! nothing was answered), that nothing acknowledged is lost, that nothing half-written is
//! served, and that the next start recovers on its own.
//!
//! | window | test |
//! |---|---|
//! | authority: a certificate signed, not yet recorded | [`authority_killed_between_signing_and_recording_a_certificate`] |
//! | authority: a revocation recorded, its CRL not yet published | [`authority_killed_between_recording_a_revocation_and_publishing_its_crl`] |
//! | authority: the CRL file half written | [`authority_killed_mid_write_of_the_crl_file`] |
//! | sidecar: the renewed key saved, not its certificate (the authority recorded it); then the certificate saved, the key not in place | [`sidecar_killed_mid_rotation_twice`] |
//! | sidecar: the saved CRL half written | [`sidecar_killed_mid_crl_save`] |

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use trust_core::{NodeKey, RevocationList, RootCertificate, UnixTime};

use crate::support::net::{Net, eventually, pem_body, served_certificate};
use crate::support::{AuthorityApi, AuthorityProcess};

const TOKEN: &str = "faults-test-token-0123456789abcdef";

/// A temp folder with the authority's state and its token file.
struct Rig {
    tmp: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("token"), TOKEN).unwrap();
        Self { tmp }
    }

    fn state(&self) -> std::path::PathBuf {
        self.tmp.path().join("authority")
    }

    /// The authority, with `FAILPOINTS` set to `armed` (or none).
    fn authority(&self, armed: Option<&str>) -> AuthorityProcess {
        let env: Vec<(&str, &str)> = armed.map(|a| ("FAILPOINTS", a)).into_iter().collect();
        AuthorityProcess::start_with_env(&self.state(), &self.tmp.path().join("token"), &[], &env)
    }
}

fn new_csr() -> String {
    NodeKey::generate()
        .unwrap()
        .certificate_request("n", &["localhost".into()], &[])
        .unwrap()
}

/// `POST /trust/enroll` with the test token: the status and body, or the error when
/// nothing was answered.
async fn enroll(url: &str, csr: &str) -> Result<(u16, Value), String> {
    enroll_as(url, TOKEN, csr).await
}

async fn enroll_as(url: &str, token: &str, csr: &str) -> Result<(u16, Value), String> {
    let r = reqwest::Client::new()
        .post(format!("{url}/trust/enroll"))
        .json(&json!({"csr": csr, "token": token}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.map_err(|e| e.to_string())?))
}

/// `POST /trust/<what>/<id>` (revoke, verify): the status and body, or the error.
async fn post_id(url: &str, what: &str, id: &str) -> Result<(u16, Value), String> {
    let r = reqwest::Client::new()
        .post(format!("{url}/trust/{what}/{id}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.map_err(|e| e.to_string())?))
}

/// Waits for the process to end and asserts it died by SIGKILL (the crash point).
fn assert_killed(status: std::process::ExitStatus, window: &str) {
    assert_eq!(
        status.signal(),
        Some(9),
        "the process died at the crash point `{window}` ({status:?})"
    );
}

/// Names of the temp files a crash left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// The CRL in `state/<file>` (DER), verified against the authority's root.
fn crl_on_disk(state: &Path, file: &str, root_file: &str) -> RevocationList {
    let root = RootCertificate::from_pem(&std::fs::read_to_string(state.join(root_file)).unwrap())
        .unwrap();
    RevocationList::from_der(
        &std::fs::read(state.join(file)).unwrap(),
        &root,
        UnixTime::now(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_killed_between_signing_and_recording_a_certificate() {
    let window = "authority::certificate-issued-not-recorded";
    let rig = Rig::new();
    // The first enrollment passes the point; the second dies there.
    let mut authority = rig.authority(Some(&format!("{window}=1*off->return")));
    let (first_csr, second_csr) = (new_csr(), new_csr());
    let (code, first) = enroll(&authority.url, &first_csr).await.unwrap();
    assert_eq!(code, 200, "{first}");
    let lost = enroll(&authority.url, &second_csr).await;
    assert!(lost.is_err(), "nothing answered: {lost:?}");
    assert_killed(authority.wait(), window);

    let authority = rig.authority(None);
    let nodes = AuthorityApi::new(&authority.url).nodes().await;
    let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(
        ids,
        [first["node_id"].as_str().unwrap()],
        "the unrecorded certificate was never acknowledged and is nowhere"
    );
    // The node asks again and gets a new id, then the same answer on a repeat.
    let (code, second) = enroll(&authority.url, &second_csr).await.unwrap();
    assert_eq!(code, 200, "{second}");
    assert_ne!(second["node_id"], first["node_id"], "no id given twice");
    let (_, again) = enroll(&authority.url, &second_csr).await.unwrap();
    assert_eq!(again["node_id"], second["node_id"]);
    assert_eq!(again["certificate"], second["certificate"]);
    let (_, repeat_first) = enroll(&authority.url, &first_csr).await.unwrap();
    assert_eq!(
        repeat_first["certificate"], first["certificate"],
        "acknowledged, kept"
    );
    assert!(leftovers(&rig.state()).is_empty());
}

/// Starts the authority with `window` armed as `actions`, enrolls a node and revokes it:
/// asserts nothing was answered and the process died at the point. Returns the node's
/// enrollment answer, its id and the CRL number on disk before the revocation.
async fn revoke_into_a_crash(rig: &Rig, window: &str, actions: &str) -> (Value, String, u64) {
    let mut authority = rig.authority(Some(&format!("{window}={actions}")));
    let (_, node) = enroll(&authority.url, &new_csr()).await.unwrap();
    let id = node["node_id"].as_str().unwrap().to_owned();
    let before = crl_on_disk(&rig.state(), "crl.der", "ca-cert.pem").number();
    let lost = post_id(&authority.url, "revoke", &id).await;
    assert!(lost.is_err(), "nothing answered: {lost:?}");
    assert_killed(authority.wait(), window);
    (node, id, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_killed_between_recording_a_revocation_and_publishing_its_crl() {
    let rig = Rig::new();
    let (node, id, crl_before) = revoke_into_a_crash(
        &rig,
        "authority::revocation-recorded-not-published",
        "return",
    )
    .await;
    // On disk: the revocation recorded, the CRL not yet published.
    let on_disk = crl_on_disk(&rig.state(), "crl.der", "ca-cert.pem");
    assert_eq!(
        on_disk.number(),
        crl_before,
        "the crash came before publishing"
    );

    // The next start publishes a CRL listing it, without being asked again.
    let authority = rig.authority(None);
    let published = crl_on_disk(&rig.state(), "crl.der", "ca-cert.pem");
    assert!(published.number() > crl_before);
    let serial = trust_core::Serial::from_hex(node["serial"].as_str().unwrap()).unwrap();
    assert!(
        published.is_revoked(&serial),
        "the recorded revocation is published"
    );
    let (_, verified) = post_id(&authority.url, "verify", &id).await.unwrap();
    assert_eq!(verified["verified"], false, "{verified}");
    // Asking again changes nothing: already revoked, already published.
    let (code, again) = post_id(&authority.url, "revoke", &id).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(again["already"], true, "{again}");
    assert_eq!(again["crl_number"].as_u64(), Some(published.number()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_killed_mid_write_of_the_crl_file() {
    let rig = Rig::new();
    // The CRL published at start-up is written whole; the revocation's dies half-way.
    let (node, id, before) =
        revoke_into_a_crash(&rig, "half-written:crl.der", "1*off->return").await;
    assert_eq!(
        leftovers(&rig.state()).len(),
        1,
        "the half-written file is the temp file, never crl.der"
    );
    assert_eq!(
        crl_on_disk(&rig.state(), "crl.der", "ca-cert.pem").number(),
        before
    );

    let authority = rig.authority(None);
    assert!(
        leftovers(&rig.state()).is_empty(),
        "the next start removes it"
    );
    let der = crl_on_disk(&rig.state(), "crl.der", "ca-cert.pem");
    let pem = RevocationList::from_pem(
        &std::fs::read_to_string(rig.state().join("crl.pem")).unwrap(),
        &RootCertificate::from_pem(
            &std::fs::read_to_string(rig.state().join("ca-cert.pem")).unwrap(),
        )
        .unwrap(),
        UnixTime::now(),
    )
    .unwrap();
    assert!(der.number() > before);
    assert_eq!(
        der.number(),
        pem.number(),
        "crl.der and crl.pem are the same CRL"
    );
    let serial = trust_core::Serial::from_hex(node["serial"].as_str().unwrap()).unwrap();
    assert!(
        der.is_revoked(&serial),
        "the recorded revocation is published"
    );
    let (_, verified) = post_id(&authority.url, "verify", &id).await.unwrap();
    assert_eq!(verified["verified"], false, "{verified}");
}

/// The sidecar's state folder for node `id`.
fn node_state(net: &Net, id: u32) -> std::path::PathBuf {
    net.tmp.path().join(format!("node-{id}/state"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_mid_rotation_twice() {
    let net = Net::start(&["--node-validity", "30s"]);
    let app = net.app("b", None);
    let state = node_state(&net, 1);
    // Renew a tenth into the certificate's life: 3 s after issue.
    let renew = ("TRUST_PROXY_ROTATION_RENEW_AT", "0.1");

    let window = "sidecar::renewed-key-saved-certificate-not";
    let armed = format!("{window}=return");
    let mut b = net.sidecar_with_env(1, app.addr(""), &[], &[renew, ("FAILPOINTS", &armed)]);
    let enrolled = std::fs::read_to_string(state.join("node-cert.pem")).unwrap();
    assert_killed(b.child.wait().unwrap(), window);
    assert!(
        state.join("node-key.pem.new").exists(),
        "the window was hit"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("node-cert.pem")).unwrap(),
        enrolled
    );

    // The authority recorded the renewal the node never received: from now on it accepts
    // no renewal signed with the replaced key.
    let recorded: Value = reqwest::get(format!("{}/trust/certificate/1", net.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recorded = recorded["certificate"].as_str().unwrap().to_owned();
    assert_ne!(
        pem_body(&recorded),
        pem_body(&enrolled),
        "the renewal was recorded"
    );

    // Restarted: the old pair serves, the renewal is asked again with the saved key and
    // answered with the recorded certificate; this time it dies after saving it.
    let window = "sidecar::renewed-certificate-saved-key-not-in-place";
    let armed = format!("{window}=return");
    let mut b = net.sidecar_with_env(1, app.addr(""), &[], &[renew, ("FAILPOINTS", &armed)]);
    assert_killed(b.child.wait().unwrap(), window);
    let log = b.log_text();
    assert!(
        log.contains("renewing with the key of the renewal a crash interrupted"),
        "{log}"
    );
    let renewed = std::fs::read_to_string(state.join("node-cert.pem")).unwrap();
    assert_ne!(renewed, enrolled, "the renewed certificate was saved");
    assert_eq!(
        pem_body(&renewed),
        pem_body(&recorded),
        "the certificate the authority recorded, not a second one"
    );
    assert!(
        state.join("node-key.pem.new").exists(),
        "its key not yet in place"
    );

    // Restarted: the renewal is finished (the key matches the saved certificate), and
    // the node serves with the renewed pair without enrolling again; the authority
    // issued one certificate for the renewal, not two.
    let b = net.sidecar(1, app.addr(""), &[]);
    let admin = b.addr("admin").to_owned();
    let ready = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(!state.join("node-key.pem.new").exists());
    let log = b.log_text();
    assert!(
        log.contains("finished a renewal interrupted by a crash"),
        "{log}"
    );
    assert!(log.contains("committed=true"), "{log}");
    assert!(!log.contains("enrolling again"), "{log}");
    assert_eq!(
        served_certificate(b.addr("ingress")),
        pem_body(&renewed),
        "the ingress serves the renewed certificate with its key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_mid_crl_save() {
    let window = "half-written:crl.der";
    let mut net = Net::start(&[]);
    let app = net.app("b", None);
    let state = node_state(&net, 1);
    // The CRL fetched at start-up is saved whole; the next one dies half-way.
    let armed = format!("{window}=1*off->return");
    let mut b = net.sidecar_with_env(1, app.addr(""), &[], &[("FAILPOINTS", &armed)]);
    let saved = state.join("crl.der");
    eventually(Duration::from_secs(10), "the first CRL saved", || {
        let saved = saved.clone();
        async move { saved.exists() }
    })
    .await;
    let saved_first = crl_on_disk(&state, "crl.der", "ca-cert.pem").number();
    // A revocation publishes a new CRL; the sidecar's long poll brings it and saves it.
    let token = std::fs::read_to_string(&net.token).unwrap();
    let (_, other) = enroll_as(&net.url, token.trim(), &new_csr()).await.unwrap();
    net.api()
        .revoke(other["node_id"].as_str().unwrap().parse().unwrap())
        .await;
    assert_killed(b.child.wait().unwrap(), window);
    assert_eq!(leftovers(&state).len(), 1, "the window was hit");
    assert_eq!(
        crl_on_disk(&state, "crl.der", "ca-cert.pem").number(),
        saved_first,
        "the saved CRL is still the whole earlier one"
    );

    // Restarted with the authority gone, it serves on the saved CRL.
    drop(net.authority.take());
    let b = net.sidecar(1, app.addr(""), &[]);
    assert!(
        leftovers(&state).is_empty(),
        "the next start removes the temp file"
    );
    let admin = b.addr("admin").to_owned();
    eventually(Duration::from_secs(10), "ready on the saved CRL", || {
        let admin = admin.clone();
        async move {
            reqwest::get(format!("http://{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    let log = b.log_text();
    assert!(log.contains("loaded the saved CRL"), "{log}");
    assert!(!log.contains("unusable"), "{log}");
}
