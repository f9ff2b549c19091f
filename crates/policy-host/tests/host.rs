//! The policy host with the real plugins built from `plugins/`: decisions, containment of
//! misbehaving plugins, refusal of broken ones, shadow mode, and hot reload under load.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use policy_host::seen::SeenStore;
use policy_host::{
    BUILT_PLUGIN_DIR, Decision, Evaluation, Observer, Peer, PolicyHost, Recorder, Request,
    SignatureFacts, SignatureRefusal, Verdict,
};

fn built(name: &str) -> PathBuf {
    Path::new(BUILT_PLUGIN_DIR).join(format!("{}.wasm", name.replace('-', "_")))
}

/// A folder with copies of the built plugins and a set file.
struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new(set: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "admin-only-revoke",
            "replay-window",
            "route-allow-list",
            "misbehave",
            "wrong-world",
            "contract-0-1-0",
            "contract-newer",
        ] {
            std::fs::copy(
                built(p),
                dir.path().join(format!("{}.wasm", p.replace('-', "_"))),
            )
            .unwrap();
        }
        let f = Self { dir };
        f.write_set(set);
        f
    }

    fn set(&self) -> PathBuf {
        self.dir.path().join("set.toml")
    }

    /// Replaces the set atomically (write beside, rename over).
    fn write_set(&self, text: &str) {
        let tmp = self.dir.path().join("set.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.set()).unwrap();
    }

    fn host(&self, observer: Arc<dyn Observer>) -> policy_host::Result<PolicyHost> {
        PolicyHost::new(
            &self.set(),
            self.dir.path(),
            Arc::new(SeenStore::new(10_000)),
            observer,
        )
    }
}

#[derive(Default)]
struct Counts {
    evaluated: Arc<Mutex<Vec<(String, String, bool)>>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

/// One plugin's evaluations, pushed into its [`Counts`].
struct PluginCounts {
    plugin: String,
    shadow: bool,
    evaluated: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl Recorder for PluginCounts {
    fn evaluated(&self, outcome: Evaluation, _: f64) {
        self.evaluated.lock().unwrap().push((
            self.plugin.clone(),
            outcome.label().into(),
            self.shadow,
        ));
    }
}

impl Observer for Counts {
    fn plugin(&self, plugin: &str, shadow: bool) -> Arc<dyn Recorder> {
        Arc::new(PluginCounts {
            plugin: plugin.into(),
            shadow,
            evaluated: Arc::clone(&self.evaluated),
        })
    }
    fn reloaded(&self, ok: bool) {
        if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        }
        .fetch_add(1, Ordering::SeqCst);
    }
}

fn request(method: &str, path: &str, roles: Option<&[&str]>) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        query: None,
        headers: Vec::new(),
        peer: roles.map(|roles| Peer {
            spiffe_id: "spiffe://test/node/2".into(),
            id: "2".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            serial: "01".into(),
            not_after: u64::MAX,
        }),
        signature: None,
        received_at_ms: 0,
    }
}

/// Waits (at most 5 s) until `counter` has moved past `before`.
fn wait_past(counter: &AtomicU64, before: u64, what: &str) {
    let start = Instant::now();
    while counter.load(Ordering::SeqCst) == before {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::yield_now();
    }
}

fn status(v: &Verdict) -> u16 {
    match &v.decision {
        Decision::Allow => 200,
        Decision::Deny(d) => d.status,
    }
}

const ADMIN_ONLY: &str = "[[plugin]]\nname = \"admin-only-revoke\"\n";

#[test]
fn admin_only_revoke_admits_admins_and_refuses_nodes_on_every_spelling() {
    let folder = Folder::new(ADMIN_ONLY);
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    // Each spelling as the sidecar hands it over: in canonical form.
    for spelling in [
        "/trust/revoke/3",
        "/trust/revoke/3/",
        "/trust/%72evoke/3",
        "/trust//revoke/./3",
        "/trust/revoke",
    ] {
        let path = &*request_path::canonical_path(spelling).unwrap();
        assert_eq!(
            status(&host.evaluate(&request("POST", path, Some(&["admin"])))),
            200,
            "{path}"
        );
        let denied = host.evaluate(&request("POST", path, Some(&["node"])));
        assert_eq!(status(&denied), 403, "{path}");
        assert!(
            denied
                .by
                .as_deref()
                .unwrap()
                .starts_with("admin-only-revoke@")
        );
        assert_eq!(
            status(&host.evaluate(&request("POST", path, None))),
            403,
            "{path}"
        );
    }
    // Another route to Flask (it routes letter case apart), so not this rule's.
    for other in ["/trust/status", "/TRUST/revoke/3", "/trust/revoked"] {
        assert_eq!(
            status(&host.evaluate(&request("GET", other, Some(&["node"])))),
            200,
            "{other}"
        );
    }
}

#[test]
fn replay_window_refuses_the_same_signed_request_twice_through_the_shared_store() {
    let folder = Folder::new(
        "[[plugin]]\nname = \"replay-window\"\n[plugin.settings]\nwindow_seconds = 60\n",
    );
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let signed = |nonce: &str, timestamp: u64| {
        let mut r = request("POST", "/fl/update", Some(&["node"]));
        r.signature = Some(SignatureFacts {
            node: "2".into(),
            timestamp,
            nonce: nonce.into(),
        });
        r.received_at_ms = now.as_millis() as u64;
        r
    };
    let t = now.as_secs();
    let first = host.evaluate(&signed("n1", t));
    assert_eq!((status(&first), first.signature_refusal), (200, None));
    // Each refusal also says why it refuses the signature, for the sidecar's metric.
    let again = host.evaluate(&signed("n1", t));
    assert_eq!(
        (status(&again), again.signature_refusal),
        (401, Some(SignatureRefusal::Replayed)),
        "replayed"
    );
    let old = host.evaluate(&signed("n2", t - 61));
    assert_eq!(
        (status(&old), old.signature_refusal),
        (401, Some(SignatureRefusal::Stale)),
        "outside the window"
    );
    let ahead = host.evaluate(&signed("n4", t + 600));
    assert_eq!(
        (status(&ahead), ahead.signature_refusal),
        (401, Some(SignatureRefusal::Future)),
        "from the future"
    );
    let inside = host.evaluate(&signed("n3", t - 59));
    assert_eq!(
        (status(&inside), inside.signature_refusal),
        (200, None),
        "inside the window"
    );
}

#[test]
fn a_signature_refusal_counts_only_with_the_enforced_denial_of_the_same_call() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\n");
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    let refused = host.evaluate(&request("POST", "/refuse-signature", Some(&["node"])));
    assert_eq!(
        (status(&refused), refused.signature_refusal),
        (401, Some(SignatureRefusal::Replayed))
    );
    // The same warm instance next: a report does not outlive its call, and a plugin
    // cannot turn its own allow into a counted refusal.
    let plain = host.evaluate(&request("GET", "/deny", None));
    assert_eq!((status(&plain), plain.signature_refusal), (418, None));
    let allowed = host.evaluate(&request(
        "POST",
        "/refuse-signature-then-allow",
        Some(&["node"]),
    ));
    assert_eq!((status(&allowed), allowed.signature_refusal), (200, None));
    let after = host.evaluate(&request("GET", "/deny", None));
    assert_eq!((status(&after), after.signature_refusal), (418, None));

    // A shadow plugin's report is not enforced, so not counted either.
    folder.write_set("[[plugin]]\nname = \"misbehave\"\nshadow = true\n");
    host.reload().unwrap();
    let shadow = host.evaluate(&request("POST", "/refuse-signature", Some(&["node"])));
    assert_eq!((status(&shadow), shadow.signature_refusal), (200, None));
}

#[test]
fn a_plugin_built_against_the_0_1_0_contract_loads_and_decides_in_this_host() {
    // `plugins/fixtures/contract-0-1-0` is built from a frozen copy of the 0.1.0 WIT and
    // imports every 0.1.0 host function; the host implements 0.1.1.
    let folder = Folder::new("[[plugin]]\nname = \"contract-0-1-0\"\n");
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    assert_eq!(host.plugins().len(), 1);
    let allowed = host.evaluate(&request("GET", "/fl/rounds", Some(&["node"])));
    assert_eq!(allowed.decision, Decision::Allow);
    let denied = host.evaluate(&request("GET", "/deny", Some(&["node"])));
    assert_eq!(status(&denied), 451);
    assert_eq!(denied.signature_refusal, None);
    let Decision::Deny(denial) = &denied.decision else {
        panic!("denied")
    };
    let peer = request("GET", "/deny", Some(&["node"])).peer.unwrap().id;
    assert_eq!(denial.reason, format!("0.1.0 plugin denies {peer}"));
    assert!(denied.by.unwrap().starts_with("contract-0-1-0@"));
}

#[test]
fn traps_loops_and_memory_hogs_are_contained_and_deny_unless_fail_open() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\ntimeout_ms = 20\nmemory_mb = 8\n");
    let counts = Arc::new(Counts::default());
    let host = folder.host(counts.clone()).unwrap();
    for path in ["/trap", "/spin", "/grow", "/recurse", "/wasi"] {
        let started = Instant::now();
        let v = host.evaluate(&request("GET", path, Some(&["node"])));
        assert_eq!(status(&v), 403, "{path} fails closed");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} was stopped"
        );
        // The instance that failed is gone; the plugin still answers.
        assert_eq!(
            status(&host.evaluate(&request("GET", "/ok", Some(&["node"])))),
            200
        );
    }
    assert_eq!(status(&host.evaluate(&request("GET", "/deny", None))), 418);
    let errors = counts
        .evaluated
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, outcome, _)| outcome == "error")
        .count();
    assert_eq!(errors, 5);

    let open = Folder::new("[[plugin]]\nname = \"misbehave\"\nfail = \"open\"\ntimeout_ms = 20\n");
    let host = open.host(Arc::new(Counts::default())).unwrap();
    assert_eq!(
        status(&host.evaluate(&request("GET", "/spin", None))),
        200,
        "fail-open admits"
    );
}

/// A plugin whose start-up probe is slow (as on a CPU starved by a hundred containers
/// starting at once) still loads: the probe runs under the load-time deadline, not the
/// per-call one. Requests keep the plugin's own deadline; a probe past the load-time one
/// is still refused.
#[test]
fn a_slow_start_up_probe_loads_but_requests_keep_their_deadline() {
    // 30 million loop turns: tens of milliseconds, far past a 1 ms per-call deadline.
    let folder = Folder::new(
        "[[plugin]]\nname = \"misbehave\"\ntimeout_ms = 1\n[plugin.settings]\nprobe_spin = \"30\"\n",
    );
    let host = folder
        .host(Arc::new(Counts::default()))
        .unwrap_or_else(|e| panic!("a slow probe must not stop the load: {e}"));
    assert_eq!(status(&host.evaluate(&request("GET", "/ok", None))), 200);
    assert_eq!(
        status(&host.evaluate(&request("GET", "/spin", None))),
        403,
        "a request past the plugin's 1 ms deadline is still stopped"
    );
    // Endless at load: refused once the load-time deadline has passed.
    folder.write_set(
        "[[plugin]]\nname = \"misbehave\"\n[plugin.settings]\nprobe_spin = \"1000000\"\n",
    );
    let started = Instant::now();
    let refused = folder
        .host(Arc::new(Counts::default()))
        .err()
        .map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("probe")),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A plugin compiled once into a compile cache is not compiled again by the next host
/// (another process, e.g. each container of an image that was warmed when it was built);
/// a cache folder others may write is refused, since it holds native code.
#[test]
fn a_compile_cache_spares_the_next_host_the_compilation_and_must_be_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let folder = Folder::new(
        "[[plugin]]\nname = \"replay-window\"\n[[plugin]]\nname = \"admin-only-revoke\"\n",
    );
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let cached = || {
        PolicyHost::with_compile_cache(
            &folder.set(),
            folder.dir.path(),
            Arc::new(SeenStore::new(10_000)),
            Arc::new(Counts::default()),
            cache.path(),
        )
    };
    let first = cached().unwrap();
    assert_eq!(first.compile_cache_counts(), Some((0, 2)), "both compiled");
    let second = cached().unwrap();
    assert_eq!(
        second.compile_cache_counts(),
        Some((2, 0)),
        "both from the cache"
    );
    assert_eq!(
        status(&second.evaluate(&request("POST", "/trust/revoke/3", Some(&["node"])))),
        403,
        "a cached plugin decides as a compiled one"
    );
    assert_eq!(
        folder
            .host(Arc::new(Counts::default()))
            .unwrap()
            .compile_cache_counts(),
        None
    );

    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = cached().err().map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("chmod go-w")),
        "{refused:?}"
    );
}

/// The epoch clock parks once no plugin has run for a second, so an idle sidecar is not
/// woken 200 times a second; a call after that must still be stopped at its deadline,
/// which holds only if the call wakes the clock before it runs.
#[test]
fn a_deadline_still_holds_after_the_idle_clock_has_parked() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\ntimeout_ms = 20\n");
    let host = Arc::new(folder.host(Arc::new(Counts::default())).unwrap());
    for round in 1..=3 {
        let waited = Instant::now();
        while !host.clock_asleep() {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "round {round}: the clock never parked with no plugin running"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // On another thread: if the clock stayed parked, the spin would never end.
        let (tx, rx) = std::sync::mpsc::channel();
        let spinning = Arc::clone(&host);
        std::thread::spawn(move || {
            let _ = tx.send(status(&spinning.evaluate(&request("GET", "/spin", None))));
        });
        let answer = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("round {round}: a spinning plugin was not stopped after the clock parked")
            });
        assert_eq!(answer, 403, "round {round}: the spin fails closed");
        assert_eq!(
            status(&host.evaluate(&request("GET", "/ok", Some(&["node"])))),
            200,
            "round {round}: the plugin answers after"
        );
    }
}

/// What a plugin's instance remembers between requests, and what a failure wipes: the
/// documented contract (docs/PLUGINS.md), so a plugin author cannot be surprised by it.
#[test]
fn an_instance_keeps_its_memory_between_requests_until_it_fails() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\ntimeout_ms = 50\n");
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    let remembered = |host: &PolicyHost| match host
        .evaluate(&request("GET", "/remember", Some(&["node"])))
        .decision
    {
        Decision::Deny(d) => d.reason,
        Decision::Allow => panic!("/remember denies with its count"),
    };
    assert_eq!(remembered(&host), "seen 1");
    assert_eq!(
        remembered(&host),
        "seen 2",
        "one instance serves requests one after another and keeps its globals"
    );
    // A trap drops the instance: the next request meets a fresh one.
    assert_eq!(
        status(&host.evaluate(&request("GET", "/trap", Some(&["node"])))),
        403
    );
    assert_eq!(
        remembered(&host),
        "seen 1",
        "a failed instance is never reused"
    );
}

#[test]
fn broken_plugins_and_sets_are_refused_with_the_reason() {
    let folder = Folder::new(ADMIN_ONLY);
    std::fs::write(folder.dir.path().join("garbage.wasm"), b"\0asm garbage").unwrap();
    // Random bytes behind a valid component header (a fixed xorshift stream).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = b"\0asm\x0d\0\x01\0".to_vec();
    random.extend((0..64 * 1024).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()[0]
    }));
    std::fs::write(folder.dir.path().join("random.wasm"), &random).unwrap();
    let whole = std::fs::read(built("admin-only-revoke")).unwrap();
    std::fs::write(
        folder.dir.path().join("truncated.wasm"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    for (set, needle) in [
        (
            "[[plugin]]\nname = \"x\"\nfile = \"garbage.wasm\"\n",
            "not a loadable component",
        ),
        (
            "[[plugin]]\nname = \"x\"\nfile = \"truncated.wasm\"\n",
            "not a loadable component",
        ),
        (
            "[[plugin]]\nname = \"x\"\nfile = \"random.wasm\"\n",
            "not a loadable component",
        ),
        (
            "[[plugin]]\nname = \"wrong-world\"\n",
            "not a `sovereign:policy/policy` component",
        ),
        // Built against a contract newer than this host's: refused at load, the import
        // named, not trapped on a request later.
        (
            "[[plugin]]\nname = \"contract-newer\"\n",
            "a newer one needs a newer trust-proxy): component imports instance `sovereign:policy/host@0.1.2`, but a matching implementation was not found in the linker: instance export `not-yet-offered`",
        ),
        ("[[plugin]]\nname = \"missing\"\n", "cannot read"),
        (
            "[[plugin]]\nname = \"misbehave\"\n[plugin.settings]\non_probe = \"trap\"\n",
            "probe",
        ),
        (
            "[[plugin]]\nname = \"admin-only-revoke\"\nfial = \"open\"\n",
            "fial",
        ),
    ] {
        folder.write_set(set);
        let err = folder
            .host(Arc::new(Counts::default()))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(needle)),
            "{set}: {err:?}"
        );
    }
}

#[test]
fn shadow_plugins_are_counted_but_never_enforced() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\nshadow = true\n");
    let counts = Arc::new(Counts::default());
    let host = folder.host(counts.clone()).unwrap();
    assert_eq!(status(&host.evaluate(&request("GET", "/deny", None))), 200);
    assert!(
        counts
            .evaluated
            .lock()
            .unwrap()
            .contains(&("misbehave".into(), "deny".into(), true))
    );
}

#[test]
fn routes_limit_a_plugin_to_its_prefixes_whatever_the_spelling() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\nroutes = [\"/guarded\"]\n");
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    // `/deny` is outside the plugin's routes: not evaluated, admitted.
    assert_eq!(status(&host.evaluate(&request("GET", "/deny", None))), 200);
    let folder =
        Folder::new("[[plugin]]\nname = \"admin-only-revoke\"\nroutes = [\"/trust/revoke\"]\n");
    let host = folder.host(Arc::new(Counts::default())).unwrap();
    assert_eq!(
        status(&host.evaluate(&request("POST", "/trust/revoke/3", Some(&["node"])))),
        403
    );
    assert_eq!(
        status(&host.evaluate(&request("POST", "/trust/revoked", Some(&["node"])))),
        200,
        "routes cover whole segments"
    );
    // The host compares canonical paths only: any other spelling is denied outright, never
    // matched as written (the sidecar canonicalises before it asks).
    for spelling in [
        "/trust/%72evoke/3",
        "/trust//revoke/3",
        "/trust/./revoke/3",
        "/x;y",
    ] {
        assert_eq!(
            status(&host.evaluate(&request("POST", spelling, Some(&["admin"])))),
            400,
            "{spelling}"
        );
    }
}

/// A log another process appends to in the set's folder is not a change to the policy:
/// it neither reloads the set nor holds off a real change while the writes go on (a reload
/// waits for `debounce` of quiet, and before the watcher looked at names it never came).
#[test]
fn a_busy_file_beside_the_set_neither_reloads_it_nor_holds_off_a_change() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\n");
    let counts = Arc::new(Counts::default());
    let host = Arc::new(folder.host(counts.clone()).unwrap());
    let debounce = Duration::from_millis(50);
    let _watch = host.watch(debounce).unwrap();
    // Appends every 2 ms, well inside the debounce, until told to stop (at most 20 s).
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
        let log = folder.dir.path().join("app.log");
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut file = std::fs::File::create(log).unwrap();
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(20) {
                writeln!(file, "GET /whoami 200").unwrap();
                file.flush().unwrap();
                writes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // Let the log be written for a good many debounce windows first.
    while writes.load(Ordering::SeqCst) < 200 {
        std::thread::yield_now();
    }
    assert_eq!(
        counts.reloads_ok.load(Ordering::SeqCst) + counts.reloads_failed.load(Ordering::SeqCst),
        0,
        "nothing but the log changed, yet the set was reloaded"
    );
    folder.write_set("[[plugin]]\nname = \"admin-only-revoke\"\n");
    let start = Instant::now();
    while status(&host.evaluate(&request("GET", "/deny", None))) != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the new set never came into force while the log was being written \
             ({} writes)",
            writes.load(Ordering::SeqCst)
        );
        std::thread::yield_now();
    }
    assert!(
        !stop.load(Ordering::SeqCst) && writes.load(Ordering::SeqCst) > 200,
        "the log was still being written when the change came into force"
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(
        counts.reloads_ok.load(Ordering::SeqCst),
        1,
        "one change, one reload"
    );
}

#[test]
fn hot_reload_under_load_loses_no_request_and_refuses_a_broken_set() {
    let folder = Folder::new("[[plugin]]\nname = \"misbehave\"\n");
    let counts = Arc::new(Counts::default());
    let host = Arc::new(folder.host(counts.clone()).unwrap());
    let _watch = host.watch(Duration::from_millis(50)).unwrap();
    // A client evaluates `/deny` continuously; it flips between allowed (misbehave is
    // replaced by a set without it) and denied, never anything else.
    let stop = Arc::new(AtomicBool::new(false));
    let (evaluated, unexpected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (host, stop, evaluated, unexpected) = (
            Arc::clone(&host),
            Arc::clone(&stop),
            Arc::clone(&evaluated),
            Arc::clone(&unexpected),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let v = host.evaluate(&request("GET", "/deny", None));
                let s = status(&v);
                if s != 200 && s != 418 {
                    eprintln!("unexpected: {v:?}");
                    unexpected.fetch_add(1, Ordering::SeqCst);
                }
                evaluated.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let wait_for = |want: u16, what: &str| {
        let start = Instant::now();
        while status(&host.evaluate(&request("GET", "/deny", None))) != want {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::yield_now();
        }
        start.elapsed()
    };
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        folder.write_set("[[plugin]]\nname = \"admin-only-revoke\"\n");
        slowest = slowest.max(wait_for(200, &format!("round {round}: new set in force")));
        folder.write_set("[[plugin]]\nname = \"misbehave\"\n");
        slowest = slowest.max(wait_for(418, &format!("round {round}: back")));
    }
    // A broken set is refused; the one in force keeps deciding.
    let failed_before = counts.reloads_failed.load(Ordering::SeqCst);
    folder.write_set("[[plugin]]\nname = \"wrong-world\"\n");
    wait_past(
        &counts.reloads_failed,
        failed_before,
        "the broken set was looked at",
    );
    assert_eq!(status(&host.evaluate(&request("GET", "/deny", None))), 418);
    // A good set again (misbehave): it loads.
    let ok_before = counts.reloads_ok.load(Ordering::SeqCst);
    folder.write_set("[[plugin]]\nname = \"misbehave\"\n");
    wait_past(&counts.reloads_ok, ok_before, "the good set was loaded");
    // A plugin file the set names, caught half-written, is refused, then taken once
    // complete.
    let whole = std::fs::read(built("admin-only-revoke")).unwrap();
    let target = folder.dir.path().join("misbehave.wasm");
    let failed_before = counts.reloads_failed.load(Ordering::SeqCst);
    std::fs::write(&target, &whole[..whole.len() / 3]).unwrap();
    wait_past(
        &counts.reloads_failed,
        failed_before,
        "the half-written file was looked at",
    );
    assert_eq!(
        status(&host.evaluate(&request("GET", "/deny", None))),
        418,
        "old chain still serving"
    );
    std::fs::write(&target, &whole).unwrap();
    // The complete file is admin-only-revoke now: `/deny` is allowed.
    wait_for(200, "the completed file is in force");
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    assert_eq!(
        unexpected.load(Ordering::SeqCst),
        0,
        "no request failed because of a reload"
    );
    assert!(evaluated.load(Ordering::SeqCst) > 0);
    eprintln!("slowest reload seen by a client: {slowest:?}");
    // Compiled once per version: after the flips only what the set in force uses is held.
    assert_eq!(host.compiled_versions(), 1);
}

#[test]
fn the_shipped_policy_sets_load_with_the_built_plugins() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let host = PolicyHost::new(
                &path,
                Path::new(BUILT_PLUGIN_DIR),
                Arc::new(SeenStore::new(100)),
                Arc::new(Counts::default()),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!host.plugins().is_empty());
            loaded += 1;
        }
    }
    assert!(loaded >= 2);
}
