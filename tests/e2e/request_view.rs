//! What the sidecar checks is exactly what the app sees, proven against the parsers apps
//! really run on: a Flask app on werkzeug's server, the same app under gunicorn, and a raw
//! socket app that records the exact bytes it receives.
//!
//! The sidecar in front of each is configured as the network's are: a message signature is
//! required under `/fl`, `/trust/status` is open to anonymous clients, and the
//! `admin-only-revoke` plugin guards `/trust/revoke`. Every spelling (a table of known
//! bypass shapes, then generated ones: escapes of every byte in both cases, dot and empty
//! segments, `;` parameters, `+`, non-ASCII, overlong and invalid escapes) is sent twice,
//! unsigned by a plain node and signed by an admin. For each, either the sidecar refuses it,
//! or the route the app matched is the route the sidecar matched, and an unsigned
//! non-admin request never reaches a signed or admin route.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use request_path::{RoutePrefix, canonical_path};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use trust_core::testing::TestNode;
use trust_core::{MessageSigner, NodeKey, RequestParts, UnixTime};

use crate::support::ingress::{
    Node, PKI, anonymous_client_config, client_config, start_in_front_of,
};
use crate::support::{Served, python, repo_root};

/// The app behind the sidecar.
enum App {
    /// Flask's route_app.py on werkzeug or gunicorn (held: dropping it stops the process).
    Python(#[allow(dead_code, reason = "held for its Drop")] Served),
    /// The raw socket app; its stop token.
    Raw(CancellationToken),
}

impl Drop for App {
    fn drop(&mut self) {
        if let App::Raw(stop) = self {
            stop.cancel();
        }
    }
}

/// `tests/python/route_app.py` under `server` (`werkzeug` or `gunicorn`).
fn python_app(server: &str, dir: &std::path::Path) -> (App, std::net::SocketAddr) {
    let mut cmd = python();
    cmd.arg(repo_root().join("tests/python/route_app.py"))
        .arg(server);
    let served = Served::spawn(cmd, dir.join(format!("{server}.log")), &[""]);
    let addr = served.addr("").parse().unwrap();
    (App::Python(served), addr)
}

/// A keep-alive HTTP/1.1 app on a raw socket: it answers every request with its head,
/// byte for byte, as JSON `{"head": ...}` (the body it reads by Content-Length and drops).
async fn raw_app() -> (App, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = token.cancelled() => return,
                a = listener.accept() => a.unwrap(),
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_until_head_end(&mut stream, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = header_values(&head, "content-length")
                        .first()
                        .map_or(0, |v| v.parse::<usize>().unwrap());
                    while buf.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    let body = serde_json::json!({ "head": head }).to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (App::Raw(stop), addr)
}

/// Reads into `buf` until it holds a whole head; the head's length (with its blank line),
/// or `None` once the peer closed.
async fn read_until_head_end(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The values of header `name` (any case) in a raw head.
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// The request target of a raw head.
fn target_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// A sidecar configured as the network's, in front of `app`.
struct Rig {
    node: Node,
    _app: App,
    _dir: tempfile::TempDir,
}

async fn rig(app: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (app, upstream) = match app {
        "raw" => raw_app().await,
        server => python_app(server, dir.path()),
    };
    let set = dir.path().join("set.toml");
    std::fs::write(&set, "[[plugin]]\nname = \"admin-only-revoke\"\n").unwrap();
    let host = policy_host::PolicyHost::new(
        &set,
        std::path::Path::new(policy_host::BUILT_PLUGIN_DIR),
        Arc::new(policy_host::seen::SeenStore::new(1000)),
        Arc::new(policy_host::chain::NoObserver),
    )
    .unwrap();
    let admission = Arc::new(sidecar::policy::WasmPolicy::new(Arc::new(host)));
    let (node, _) = start_in_front_of(
        upstream,
        Arc::new(AtomicUsize::new(0)),
        CancellationToken::new(),
        admission,
        |s| {
            s.signed_prefixes = vec![RoutePrefix::new("/fl").unwrap()];
            s.anonymous_prefixes = vec![RoutePrefix::new("/trust/status").unwrap()];
        },
        None,
    )
    .await;
    Rig {
        node,
        _app: app,
        _dir: dir,
    }
}

/// The class of route the sidecar's configuration gives a canonical path; the Flask app
/// names its routes by the same classes.
fn sidecar_route(path: &str) -> &'static str {
    let under = |p: &str| RoutePrefix::new(p).unwrap().covers(path);
    if under("/fl") {
        "signed"
    } else if under("/trust/revoke") {
        "admin"
    } else if under("/trust/status") {
        "anonymous"
    } else {
        "other"
    }
}

/// An mTLS (or, with `None`, anonymous TLS) keep-alive connection that reconnects when the
/// sidecar closes it.
struct Client {
    node_addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    stream: Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

/// What came back for one request.
#[derive(Debug)]
enum Answer {
    /// Refused before the app: the sidecar's JSON refusal, or hyper's bare 400.
    Refused(u16),
    /// The app answered (status, JSON body).
    App(u16, Value),
}

impl Client {
    fn new(node: &Node, who: Option<&TestNode>) -> Self {
        let config = match who {
            Some(who) => client_config(who),
            None => anonymous_client_config(),
        };
        Self {
            node_addr: node.addr,
            config: Arc::new(config),
            stream: None,
        }
    }

    async fn connect(&mut self) -> &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        if self.stream.is_none() {
            let tcp = tokio::net::TcpStream::connect(self.node_addr)
                .await
                .unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap();
            self.stream = Some(tls);
        }
        self.stream.as_mut().unwrap()
    }

    /// Sends `request` (raw bytes: head and body) and reads one answer.
    async fn send(&mut self, request: &[u8]) -> Answer {
        let stream = self.connect().await;
        if stream.write_all(request).await.is_err() {
            self.stream = None;
            let stream = self.connect().await;
            stream.write_all(request).await.unwrap();
        }
        let stream = self.stream.as_mut().unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            read_until_head_end(stream, &mut buf),
        )
        .await
        .expect("an answer or a close within 20 s");
        let Some(end) = read else {
            // Closed without an answer: refused by the HTTP parser.
            self.stream = None;
            return Answer::Refused(400);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = buf[end..].to_vec();
        let chunked = header_values(&head, "transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            while !body.ends_with(b"0\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                assert!(n > 0, "chunked answer cut short: {head}");
                body.extend_from_slice(&chunk[..n]);
            }
            body = dechunk(&body);
        } else {
            let length = header_values(&head, "content-length")
                .first()
                .map_or(0, |v| v.parse::<usize>().unwrap());
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                assert!(n > 0, "answer cut short: {head}");
                body.extend_from_slice(&chunk[..n]);
            }
        }
        if header_values(&head, "connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"))
        {
            self.stream = None;
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if json.get("error").is_some() || (status == 400 && body.is_empty()) {
            assert!((400..500).contains(&status), "{head}{json}");
            return Answer::Refused(status);
        }
        Answer::App(status, json)
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).unwrap().trim(), 16)
            .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw = &raw[line_end + 2 + size + 2..];
    }
}

fn signer(who: &TestNode) -> MessageSigner {
    let key = NodeKey::from_pkcs8_der(who.key.pkcs8_der().secret_pkcs8_der()).unwrap();
    MessageSigner::new(key, &who.subject, &who.cert.der)
}

/// A POST of `target` (raw bytes: any spelling), signed by `by` over that very target when
/// given, with `extra` header lines.
fn request(node: &Node, target: &[u8], by: Option<&MessageSigner>, extra: &str) -> Vec<u8> {
    let signed_over = String::from_utf8_lossy(target).into_owned();
    request_signed_over(node, target, by.map(|b| (b, signed_over.as_str())), extra)
}

/// [`request`], the signature made over `signed_over` (the origin-form target the sidecar
/// verifies, for an absolute-form `target`).
fn request_signed_over(
    node: &Node,
    target: &[u8],
    by: Option<(&MessageSigner, &str)>,
    extra: &str,
) -> Vec<u8> {
    let body = b"{}";
    let mut head = b"POST ".to_vec();
    head.extend_from_slice(target);
    head.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{extra}",
            node.authority,
            body.len()
        )
        .as_bytes(),
    );
    // A target the signer refuses to sign (raw non-ASCII) goes unsigned.
    if let Some((signer, text)) = by
        && let Ok(signed) = signer.sign(
            &RequestParts::new("POST", &node.authority, text, body),
            UnixTime::now(),
        )
    {
        for (k, v) in signed.pairs() {
            head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(body);
    head
}

/// Every `%XX` decoded, as UTF-8: the path an app reads from a canonical target.
fn app_reading(canonical: &str) -> String {
    let b = canonical.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&canonical[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Spellings of protected and unprotected routes that have bypassed real proxies: escapes
/// of plain characters, dot and empty segments, case, `;` parameters, escaped separators
/// and dots, overlong UTF-8, invalid escapes, controls, backslashes, fragments.
const TABLE: &[&str] = &[
    "/fl/update",
    "/%66l/update",
    "/%66%6C/%75pdate",
    "/f%6c/update",
    "/fl",
    "/fl/",
    "/%66l",
    "//fl/update",
    "/./fl/update",
    "/x/../fl/update",
    "/fl/./update",
    "/fl//update",
    "/fl;x/update",
    "/fl;/update",
    "/fl%3b/update",
    "/fl%2fupdate",
    "/fl%2Fupdate",
    "/%2e%2e/fl/update",
    "/x/%2e%2e/fl/update",
    "/x/.%2e/fl/update",
    "/%c0%ae%c0%ae/fl/update",
    "/fl%00/update",
    "/fl%0a/update",
    "/fl%zz/update",
    "/fl%/update",
    "/fl\\update",
    "/x\\..\\fl/update",
    "/fl/update#x",
    "/FL/update",
    "/Fl/update",
    "/flx",
    "/fl%20/update",
    "/fl+/update",
    "/fl/update?x=/../y",
    "/trust/revoke/3",
    "/trust/%72evoke/3",
    "/trust/revoke%2f3",
    "/trust//revoke/3",
    "/trust/./revoke/3",
    "/trust/revoke/../revoke/3",
    "/trust/x/../revoke/3",
    "/TRUST/REVOKE/3",
    "/trust/revoke;x/3",
    "/trust/revoked",
    "/trust/status",
    "/trust/statusX",
    "/trust/%73tatus",
    "/caf\u{e9}/x",
    "/caf%c3%a9/x",
    "/%ff/x",
    "/a%2Bb/%40c/%7Ed",
];

/// Generated spellings: a route, then up to six edits (escape a character in either case,
/// add a dot, dot-dot or empty segment, change a letter's case, add a trailing slash, or
/// insert a piece parsers disagree on).
fn generated(count: usize) -> Vec<Vec<u8>> {
    let routes = prop::sample::select(vec![
        "/fl/update",
        "/fl",
        "/trust/revoke/3",
        "/trust/status",
        "/other/x",
    ]);
    let piece = prop::sample::select(vec![
        "%2e", "%2E", "%2f", "%5c", ";", ";x=1", "%3b", "%00", "%0a", "%ff", "%c0%ae", "%zz", "%",
        "+", "%2b", "%20", "\u{e9}", "%c3%a9", "~", "%7e", "\\", ".", "..", "//", "#", "%23",
        "%3f", "%25", "%u002e", "\u{ff0f}",
    ]);
    let edit = (0u8..6, any::<prop::sample::Index>(), any::<bool>(), piece);
    let strategy = (routes, prop::collection::vec(edit, 0..6));
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| {
            let (route, edits) = strategy.new_tree(&mut runner).unwrap().current();
            let mut s: Vec<u8> = route.as_bytes().to_vec();
            for (kind, at, upper, piece) in edits {
                let i = 1 + at.index(s.len());
                let i = i.min(s.len());
                match kind {
                    0 => {
                        let c = s[i - 1];
                        if c.is_ascii_alphanumeric() || b"-_~+".contains(&c) {
                            let e = if upper {
                                format!("%{c:02X}")
                            } else {
                                format!("%{c:02x}")
                            };
                            s.splice(i - 1..i, e.bytes());
                        }
                    }
                    1 => s.splice(i..i, b"/./".iter().copied()).for_each(drop),
                    2 => s.splice(i..i, b"/x/../".iter().copied()).for_each(drop),
                    3 => s.splice(i..i, b"/".iter().copied()).for_each(drop),
                    4 => s[i - 1] = s[i - 1].to_ascii_uppercase(),
                    _ => s.splice(i..i, piece.bytes()).for_each(drop),
                }
            }
            s
        })
        .collect()
}

/// How many spellings to generate: 400, or `REQUEST_VIEW_SPELLINGS` for a deeper run.
fn generated_count() -> usize {
    std::env::var("REQUEST_VIEW_SPELLINGS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400)
}

/// Every table and generated spelling through the sidecar in front of `app`: unsigned as a
/// plain node, then signed as an admin. Returns (refused, reached the app) per case.
async fn differential(app: &str) -> BTreeMap<&'static str, usize> {
    let rig = rig(app).await;
    let node = &rig.node;
    let (plain, admin) = (PKI.node(21), PKI.admin("ops"));
    let admin_signer = signer(&admin);
    let mut as_node = Client::new(node, Some(&plain));
    let mut as_admin = Client::new(node, Some(&admin));
    let mut tally = BTreeMap::new();
    let spellings = TABLE
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain(generated(generated_count()));
    for spelling in spellings {
        let text = String::from_utf8_lossy(&spelling).into_owned();
        // The HTTP layer ends a request target at `#` (a fragment is not part of it), as
        // werkzeug and gunicorn do: the sidecar reads, and forwards, what precedes it.
        let sent = text.split('#').next().unwrap_or_default();
        let (path, query) = match sent.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (sent.to_owned(), None),
        };
        let canonical = canonical_path(&path).ok().map(|c| match &query {
            Some(q) => format!("{c}?{q}"),
            None => c.into_owned(),
        });
        for (who, client, by) in [
            ("node", &mut as_node, None),
            ("admin", &mut as_admin, Some(&admin_signer)),
        ] {
            let answer = client.send(&request(node, &spelling, by, "")).await;
            let (status, seen) = match answer {
                Answer::Refused(_) => {
                    *tally.entry("refused").or_default() += 1;
                    continue;
                }
                Answer::App(status, seen) => (status, seen),
            };
            *tally.entry("reached the app").or_default() += 1;
            let canonical = canonical.as_deref().unwrap_or_else(|| {
                panic!("{app}: {text:?} ({who}) reached the app without a canonical form: {seen}")
            });
            let target = match seen.get("head") {
                Some(head) => target_of(head.as_str().unwrap()).to_owned(),
                None => seen["target"].as_str().unwrap_or_default().to_owned(),
            };
            assert_eq!(
                target, canonical,
                "{app}: {text:?} ({who}): the app received another target than the sidecar checked"
            );
            let checked_path = canonical.split('?').next().unwrap();
            let checked_route = sidecar_route(checked_path);
            if who == "node" {
                assert!(
                    !matches!(checked_route, "signed" | "admin"),
                    "{app}: {text:?} reached a {checked_route} route unsigned, without the admin role"
                );
            }
            if app == "raw" {
                continue;
            }
            assert_eq!(status, 200, "{app}: {text:?} ({who}): {seen}");
            assert_eq!(
                seen["route"], checked_route,
                "{app}: {text:?} ({who}): the app routed {seen} where the sidecar matched {checked_route}"
            );
            assert_eq!(
                seen["path"],
                app_reading(checked_path),
                "{app}: {text:?} ({who}): the app decoded the checked path otherwise"
            );
            if checked_route == "signed" {
                *tally.entry("signed route reached, signed").or_default() += 1;
            }
        }
    }
    tally
}

fn assert_not_vacuous(app: &str, tally: &BTreeMap<&str, usize>) {
    eprintln!("{app}: {tally:?}");
    assert!(
        tally.get("refused").copied().unwrap_or(0) > 100,
        "{app}: {tally:?}"
    );
    assert!(
        tally.get("reached the app").copied().unwrap_or(0) > 100,
        "{app}: {tally:?}"
    );
    if app != "raw" {
        assert!(
            tally
                .get("signed route reached, signed")
                .copied()
                .unwrap_or(0)
                > 10,
            "{app}: {tally:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_reaches_a_route_the_sidecar_did_not_check_on_werkzeug() {
    let tally = differential("werkzeug").await;
    assert_not_vacuous("werkzeug", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_reaches_a_route_the_sidecar_did_not_check_on_gunicorn() {
    let tally = differential("gunicorn").await;
    assert_not_vacuous("gunicorn", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_socket_app_receives_exactly_the_canonical_target() {
    let tally = differential("raw").await;
    assert_not_vacuous("raw", &tally);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anonymous_prefix_covers_whole_segments_of_the_canonical_path() {
    let rig = rig("werkzeug").await;
    let mut anonymous = Client::new(&rig.node, None);
    for (spelling, reaches) in [
        ("/trust/status", true),
        ("/trust/%73tatus", true),
        ("/trust/status/", true),
        ("/trust/./status", true),
        ("/trust/statusX", false),
        ("/trust/status/../revoke/3", false),
        ("/trust/stat", false),
        ("/fl/update", false),
    ] {
        let answer = anonymous
            .send(&request(&rig.node, spelling.as_bytes(), None, ""))
            .await;
        match answer {
            Answer::App(200, seen) if reaches => assert_eq!(seen["route"], "anonymous"),
            Answer::Refused(401) if !reaches => {}
            other => panic!("{spelling}: {other:?}"),
        }
    }
}

/// Identity headers from outside, in every spelling a server might read as the real one.
const SPOOFED: &str = "X-Verified-Node-Id: 999\r\n\
X_Verified_Node_Id: 998\r\n\
x-verified_roles: admin\r\n\
X_VERIFIED_ROLES: admin\r\n\
X-Verified-Spiffe-Id: spiffe://test.sovereign/admin/x\r\n\
X-Verified-Signature: true\r\n\
X-Forwarded-Client-Cert: Hash=abc;Subject=\"CN=admin\"\r\n\
x_forwarded_client_cert: By=x\r\n\
Forwarded: for=10.0.0.1\r\n\
X-Forwarded-For: 10.0.0.1\r\n\
X_Forwarded_Host: admin.example\r\n\
X-Real-IP: 10.0.0.1\r\n\
X-SSL-Client-S-DN: CN=admin\r\n\
SSL_Client_Cert: x\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_an_identity_header_from_outside_reaches_the_app() {
    for app in ["raw", "werkzeug", "gunicorn"] {
        let rig = rig(app).await;
        let before = rig.node.metrics.identity_headers_removed.get();
        let mut client = Client::new(&rig.node, Some(&PKI.node(22)));
        let answer = client
            .send(&request(&rig.node, b"/whoami", None, SPOOFED))
            .await;
        let Answer::App(200, seen) = answer else {
            panic!("{app}: {answer:?}")
        };
        assert_eq!(
            rig.node.metrics.identity_headers_removed.get() - before,
            14,
            "{app}: every spoofed name counted"
        );
        let owned =
            |name: &str| sidecar::request_view::owned_by_sidecar(&name.to_ascii_lowercase());
        let headers: Vec<(String, String)> = match seen.get("head") {
            Some(head) => head
                .as_str()
                .unwrap()
                .split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect(),
            None => seen["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_owned(),
                        kv[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
        };
        let identity: BTreeMap<String, Vec<String>> = headers
            .iter()
            .filter(|(k, _)| owned(k))
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                m.entry(k.to_ascii_lowercase()).or_default().push(v.clone());
                m
            });
        let want: BTreeMap<String, Vec<String>> = [
            ("x-verified-node-id", "22"),
            ("x-verified-spiffe-id", "spiffe://test.sovereign/node/22"),
            ("x-verified-roles", "node"),
            ("x-verified-signature", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), vec![v.to_owned()]))
        .collect();
        assert_eq!(identity, want, "{app}: the app saw {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_the_signature_named_is_the_host_the_app_receives() {
    let rig = rig("raw").await;
    let node = &rig.node;
    let who = PKI.node(23);
    let by = signer(&who);
    let mut client = Client::new(node, Some(&who));
    let host_of = |answer: Answer| match answer {
        Answer::App(200, seen) => header_values(seen["head"].as_str().unwrap(), "host"),
        other => panic!("{other:?}"),
    };
    // Signed over this node's authority and sent with it: the app gets exactly that Host.
    let good = request(node, b"/fl/update", Some(&by), "");
    assert_eq!(
        host_of(client.send(&good).await),
        std::slice::from_ref(&node.authority)
    );
    // Absolute-form naming this node: accepted, and the app's Host is that authority.
    let absolute = format!("https://{}/fl/update", node.authority);
    let signed = request_signed_over(node, absolute.as_bytes(), Some((&by, "/fl/update")), "");
    assert_eq!(
        host_of(client.send(&signed).await),
        std::slice::from_ref(&node.authority)
    );
    let before = |reason: &str| node.metrics.bad_requests.with_label_values(&[reason]).get();
    let bare = |target: &str, hosts: &[&str]| {
        let mut r = format!("GET {target} HTTP/1.1\r\n");
        for h in hosts {
            r.push_str(&format!("Host: {h}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    let other = "elsewhere:443".to_owned();
    let absolute_other = format!("https://{other}/whoami");
    for (raw, reason) in [
        (
            bare(&absolute_other, &[&node.authority]),
            "host_conflicting",
        ),
        (bare("/whoami", &[&node.authority, &other]), "host_repeated"),
        (bare("/whoami", &[]), "host_missing"),
        (bare("/whoami", &["user@elsewhere"]), "host_malformed"),
    ] {
        let was = before(reason);
        assert!(
            matches!(client.send(&raw).await, Answer::Refused(400)),
            "{reason}"
        );
        assert_eq!(before(reason), was + 1, "{reason} counted");
    }
    // A signature header spelled with `_` beside the real one: two readings, refused.
    let dup = request(node, b"/fl/update", Some(&by), "X_From_Node: 7\r\n");
    assert!(matches!(client.send(&dup).await, Answer::Refused(400)));
}

#[test]
fn the_generator_makes_the_shapes_it_promises() {
    let made = generated(400);
    let has = |needle: &[u8]| {
        made.iter()
            .filter(|s| s.windows(needle.len()).any(|w| w == needle))
            .count()
    };
    for needle in [&b"%"[..], b"/./", b"/x/../", b"//", b";", b"\xc3\xa9"] {
        assert!(
            has(needle) > 2,
            "{:?}: {}",
            String::from_utf8_lossy(needle),
            has(needle)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_the_same_reading_holds() {
    let rig = rig("raw").await;
    let node = &rig.node;
    let tls = crate::support::connect_h2_tls(node, &PKI.node(24)).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    for (path, host, want) in [
        ("/%66l/update", None, 401),
        ("/fl%2fupdate", None, 400),
        ("/trust/%72evoke/3", None, 403),
        ("/x/../who%61mi", None, 200),
        ("/whoami", Some("elsewhere:443"), 400),
    ] {
        let mut request = http::Request::post(format!("https://{}{path}", node.authority))
            .body(())
            .unwrap();
        if let Some(host) = host {
            request
                .headers_mut()
                .insert(http::header::HOST, host.parse().unwrap());
        }
        let (answer, _) = client.send_request(request, true).unwrap();
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let mut body = answer.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(status, want, "{path}: {}", String::from_utf8_lossy(&bytes));
        if want == 200 {
            // The app gets the canonical target over HTTP/1.1, and the :authority as Host.
            let seen: Value = serde_json::from_slice(&bytes).unwrap();
            let head = seen["head"].as_str().unwrap();
            assert_eq!(target_of(head), "/whoami", "{head}");
            assert_eq!(
                header_values(head, "host"),
                std::slice::from_ref(&node.authority)
            );
        }
        client = client.ready().await.unwrap();
    }
}
