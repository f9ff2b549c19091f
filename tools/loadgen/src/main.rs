//! `loadgen`: drives an mTLS HTTP endpoint (the trust-proxy ingress, or nginx configured
//! the same way) with real client certificates, and prints one JSON line of results.
//!
//! Modes: `keepalive` (each worker holds one HTTP/1.1 connection and sends requests back
//! to back) and `new-connection` (each request opens TCP + a full TLS handshake, session
//! resumption off, so the figure is handshakes per second). `--sign` adds the network's
//! message-signature headers to every request, made with the client's key, as a sidecar's
//! egress would.
//!
//! Used by `scripts/bench-proxy.sh`; the numbers go to `docs/BENCHMARKS.md`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;
use trust_core::{MessageSigner, NodeId, NodeKey, RequestParts, Subject, UnixTime};

/// Load generator for mTLS HTTP endpoints.
#[derive(Debug, Parser)]
#[command(
    after_help = "Example:\n  loadgen --target 127.0.0.1:8443 --ca ca-cert.pem --cert node-7-cert.pem --key node-7-key.pem \\\n          --concurrency 16 --duration 10s --mode keepalive --sign --node-id 7"
)]
struct Args {
    /// `host:port` to connect to.
    #[arg(long)]
    target: String,
    /// TLS server name and HTTP `Host` (also the signature's destination).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Root certificate the server must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Client key (PKCS#8 PEM).
    #[arg(long)]
    key: PathBuf,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Request body size in bytes (POST when > 0, GET otherwise).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Concurrent workers (connections).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured duration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Connection handling.
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    mode: Mode,
    /// Sign every request (needs --node-id, the id in the client certificate).
    #[arg(long, requires = "node_id")]
    sign: bool,
    /// The client's node id.
    #[arg(long)]
    node_id: Option<u32>,
    /// With --sign: sign this many requests up front and cycle through them, so the
    /// client's own RSA signing (one CPU-bound operation per request) does not compete with
    /// the proxy for the cores. Each request is still verified in full by the proxy;
    /// timestamps stay inside its window for runs under 5 minutes. 0 signs every request
    /// live. (A replay-window policy would refuse the repeats; run it with 0.)
    #[arg(long, default_value_t = 512)]
    presign: usize,
    /// With --sign: send the signature headers under other names (`x-pad-<name>`), so each
    /// request carries the bytes of a signed one but asks for no verification. Beside a
    /// row that signs, it tells what the extra bytes cost apart from what verifying costs.
    #[arg(long, requires = "sign")]
    signature_as_padding: bool,
    /// A label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Keepalive,
    NewConnection,
}

struct Shared {
    args: Args,
    tls: TlsConnector,
    signer: Option<MessageSigner>,
    /// Ready header sets (Host and the signature), cloned per request: cloning shares
    /// the value bytes, so a request costs the client no allocation per header.
    presigned: Vec<http::HeaderMap>,
    body: Bytes,
}

#[derive(Default)]
struct Tally {
    histogram: Option<Histogram<u64>>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::from(74);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::from(66)
        }
    }
}

async fn run(args: Args) -> Result<String, String> {
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let ca = CertificateDer::from_pem_file(&args.ca).map_err(|e| format!("--ca: {e}"))?;
    let cert = CertificateDer::from_pem_file(&args.cert).map_err(|e| format!("--cert: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(&args.key).map_err(|e| format!("--key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| format!("--ca: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![cert.clone()], key)
    .map_err(|e| format!("--cert/--key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if args.mode == Mode::NewConnection {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let signer = match (args.sign, args.node_id) {
        (true, Some(id)) => {
            let key =
                NodeKey::from_pkcs8_pem(&read(&args.key)?).map_err(|e| format!("--key: {e}"))?;
            let node = NodeId::new(id).ok_or("--node-id: not a valid node id")?;
            Some(MessageSigner::new(key, &Subject::Node(node), &cert))
        }
        _ => None,
    };
    if args.signature_as_padding && args.presign == 0 {
        return Err("--signature-as-padding needs --presign > 0".into());
    }
    let body = Bytes::from(vec![b'x'; args.body_bytes]);
    let mut presigned = Vec::new();
    if let Some(signer) = &signer {
        let method = if body.is_empty() { "GET" } else { "POST" };
        for _ in 0..args.presign {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::HOST, header_value(&args.host)?);
            for (k, v) in sign(signer, method, &args.host, &args.path, &body)? {
                let k = if args.signature_as_padding {
                    format!("x-pad-{k}")
                } else {
                    k.to_string()
                };
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("header name {k:?}: {e}"))?;
                headers.insert(name, header_value(&v)?);
            }
            presigned.push(headers);
        }
    }
    let shared = Arc::new(Shared {
        tls: TlsConnector::from(Arc::new(config)),
        signer,
        presigned,
        body,
        args,
    });
    let start = Instant::now();
    let measure_from = start + shared.args.warmup;
    let end = measure_from + shared.args.duration;
    let mut workers = Vec::new();
    for id in 0..shared.args.concurrency {
        let shared = Arc::clone(&shared);
        workers.push(tokio::spawn(worker(shared, id, measure_from, end)));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = cpu_ns();
    let mut total =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ok, mut non_2xx, mut errors) = (0, 0, 0);
    for w in workers {
        let t = w.await.map_err(|e| e.to_string())?;
        if let Some(h) = &t.histogram {
            total.add(h).map_err(|e| e.to_string())?;
        }
        ok += t.ok;
        non_2xx += t.non_2xx;
        errors += t.errors;
    }
    let client_cpu_us_per_req = cpu_from.zip(cpu_ns()).map(|(from, to)| {
        (to.saturating_sub(from) as f64 / 1000.0 / ok.max(1) as f64 * 10.0).round() / 10.0
    });
    let secs = shared.args.duration.as_secs_f64();
    Ok(serde_json::json!({
        "client_cpu_us_per_req": client_cpu_us_per_req,
        "label": shared.args.label,
        "mode": match shared.args.mode { Mode::Keepalive => "keepalive", Mode::NewConnection => "new-connection" },
        "signed": shared.signer.is_some() && !shared.args.signature_as_padding,
        "signature_as_padding": shared.args.signature_as_padding,
        "presigned": shared.presigned.len(),
        "concurrency": shared.args.concurrency,
        "duration_s": secs,
        "requests": ok,
        "non_2xx": non_2xx,
        "errors": errors,
        "rps": (ok as f64 / secs).round(),
        "p50_us": total.value_at_quantile(0.50),
        "p99_us": total.value_at_quantile(0.99),
        "p999_us": total.value_at_quantile(0.999),
    })
    .to_string())
}

fn sign(
    signer: &MessageSigner,
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, String> {
    let now = UnixTime::since_unix_epoch(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let headers = signer
        .sign(&RequestParts::new(method, host, path, body), now)
        .map_err(|e| e.to_string())?;
    Ok(headers
        .pairs()
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect())
}

/// CPU time this process has used so far, in nanoseconds: the sum over its threads of
/// `/proc/self/task/*/schedstat` (Linux; `None` elsewhere). Lets a run report what the
/// load generator itself took from the cores it shares with the proxy under test.
fn cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn header_value(v: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(v).map_err(|e| format!("header value {v:?}: {e}"))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(shared: &Shared) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(&shared.args.target)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(shared.args.host.clone()).map_err(|e| e.to_string())?;
    let tls = shared
        .tls
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

/// Sends one request; `turn` picks the presigned header set (each worker counts its own,
/// so workers share no counter).
async fn one_request(shared: &Shared, send: &mut Sender, turn: usize) -> Result<bool, String> {
    let method = if shared.body.is_empty() {
        "GET"
    } else {
        "POST"
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(&shared.args.path);
    if !shared.presigned.is_empty() {
        if let Some(headers) = request.headers_mut() {
            *headers = shared.presigned[turn % shared.presigned.len()].clone();
        }
    } else if let Some(signer) = &shared.signer {
        request = request.header(http::header::HOST, &shared.args.host);
        for (k, v) in sign(
            signer,
            method,
            &shared.args.host,
            &shared.args.path,
            &shared.body,
        )? {
            request = request.header(k, v);
        }
    } else {
        request = request.header(http::header::HOST, &shared.args.host);
    }
    let request = request
        .body(Full::new(shared.body.clone()))
        .map_err(|e| e.to_string())?;
    send.ready().await.map_err(|e| e.to_string())?;
    let response = send
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(ok)
}

async fn worker(shared: Arc<Shared>, id: usize, measure_from: Instant, end: Instant) -> Tally {
    let mut tally = Tally {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Tally::default()
    };
    let mut conn: Option<Sender> = None;
    // Workers start at different header sets, so concurrent requests carry different
    // signatures, as real clients' would.
    let mut turn = id.wrapping_mul(7919);
    while Instant::now() < end {
        turn = turn.wrapping_add(1);
        let started = Instant::now();
        let result = async {
            let mut send = match conn.take() {
                Some(s) => s,
                None => connect(&shared).await?,
            };
            let ok = one_request(&shared, &mut send, turn).await?;
            if shared.args.mode == Mode::Keepalive {
                conn = Some(send);
            }
            Ok::<bool, String>(ok)
        }
        .await;
        if started < measure_from {
            continue;
        }
        match result {
            Ok(true) => {
                tally.ok += 1;
                if let Some(h) = &mut tally.histogram {
                    let _ = h.record(started.elapsed().as_micros().max(1) as u64);
                }
            }
            Ok(false) => tally.non_2xx += 1,
            Err(_) => tally.errors += 1,
        }
    }
    tally
}
