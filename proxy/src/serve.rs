//! The long-running commands: a tokio runtime, a listener, and one shutdown signal
//! (SIGTERM or Ctrl-C) that stops accepting and drains in-flight requests.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;
use trust_core::UnixTime;

use crate::error::{Error, Result};
use crate::offline::{NamePolicyArgs, StateDir, name_policy};
use crate::signals::wait_for_signal;

/// `trust-proxy authority`
#[derive(Debug, Args)]
pub struct AuthorityArgs {
    #[command(flatten)]
    #[allow(missing_docs, reason = "flattened group documents itself")]
    pub state: StateDir,
    /// Address to serve on. Loopback by default: the network reaches the authority through its own sidecar.
    #[arg(long, default_value = "127.0.0.1:7000", env = "TRUST_AUTHORITY_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Also serve the enrollment routes only (enroll, renew, CRL, CA certificate, metrics,
    /// health) on this address, for nodes on the network before they have a certificate.
    /// Everything else stays on --listen, behind the authority's sidecar.
    #[arg(long, env = "TRUST_AUTHORITY_ENROLL_LISTEN")]
    pub enroll_listen: Option<std::net::SocketAddr>,
    /// Trust domain of a root created at first start (an existing root keeps its own).
    #[arg(long, default_value = "sovereign.local")]
    pub trust_domain: String,
    /// File holding the bootstrap token nodes present to enroll (at least 16 characters).
    #[arg(
        long,
        env = "TRUST_BOOTSTRAP_TOKEN_FILE",
        conflicts_with = "bootstrap_token"
    )]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The bootstrap token itself (prefer the file: arguments are visible in `ps`).
    #[arg(long, env = "TRUST_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// How long each published CRL is valid; it is re-published at half that.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub crl_validity: Duration,
    /// Lifetime of issued node certificates; sidecars renew at two thirds of it.
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub node_validity: Duration,
    #[command(flatten)]
    #[allow(missing_docs, reason = "flattened group documents itself")]
    pub names: NamePolicyArgs,
}

/// `trust-proxy probe`
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET (http only).
    pub url: String,
    /// How long one attempt may take.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep retrying (every 500 ms) until a 2xx answer or this much time has passed.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
}

/// `trust-proxy authority`.
pub fn authority(args: AuthorityArgs) -> Result<()> {
    let token = match (&args.bootstrap_token_file, &args.bootstrap_token) {
        (Some(path), None) => trust_store::read_secret(path)?.text,
        (None, Some(token)) => token.clone(),
        _ => {
            return Err(Error::Usage(
                "give the bootstrap token with --bootstrap-token-file (or TRUST_BOOTSTRAP_TOKEN)"
                    .into(),
            ));
        }
    };
    let mut config = authority::AuthorityConfig::new(
        args.state.state_dir.clone(),
        authority::Secret::new(token),
    );
    config.trust_domain = args
        .trust_domain
        .parse()
        .map_err(|e| Error::Usage(format!("--trust-domain: {e}")))?;
    config.crl_validity = args.crl_validity;
    config.node_validity = args.node_validity;
    config.names = name_policy(&args.names)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let (service, created) =
            authority::Authority::open(config, UnixTime::now()).map_err(authority_error)?;
        if created {
            tracing::info!(state_dir = %args.state.state_dir.display(), "created a new root CA");
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Error::Usage(format!("--listen {}: {e}", args.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Usage(format!("--listen {}: {e}", args.listen)))?;
        let enroll = match args.enroll_listen {
            Some(at) => {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| Error::Usage(format!("--enroll-listen {at}: {e}")))?;
                let bound = l
                    .local_addr()
                    .map_err(|e| Error::Usage(format!("--enroll-listen {at}: {e}")))?;
                Some((l, bound))
            }
            None => None,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(wait_for_signal(shutdown.clone()));
        let service = std::sync::Arc::new(service);
        tracing::info!(%addr, "authority serving");
        println!("listening on {addr}");
        let enrollment = enroll.map(|(l, bound)| {
            tracing::info!(addr = %bound, "enrollment-only listener serving");
            println!("enroll listening on {bound}");
            tokio::spawn(authority::run_scoped(
                l,
                std::sync::Arc::clone(&service),
                shutdown.clone(),
                authority::Scope::Enrollment,
            ))
        });
        let served = authority::run(listener, service, shutdown.clone())
            .await
            .map_err(authority_error);
        shutdown.cancel();
        if let Some(task) = enrollment {
            match task.await {
                Ok(r) => r.map_err(authority_error)?,
                Err(e) => return Err(Error::Service(format!("enrollment listener: {e}"))),
            }
        }
        served
    })
}

/// `trust-proxy probe`: one GET (or retries until `--wait` passes).
pub fn probe(args: &ProbeArgs) -> Result<()> {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e| Error::Usage(format!("URL {}: {e}", args.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(Error::Usage(format!(
            "URL {}: only http:// is probed (health listeners are plain HTTP)",
            args.url
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Service(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let deadline = args.wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let attempt = tokio::time::timeout(args.timeout, client.get(uri.clone())).await;
            let outcome = match attempt {
                Ok(Ok(answer)) if answer.status().is_success() => return Ok(()),
                Ok(Ok(answer)) => {
                    Error::Refused(format!("{} answered {}", args.url, answer.status()))
                }
                Ok(Err(e)) => Error::Unavailable(format!("{}: {e}", args.url)),
                Err(_) => Error::Unavailable(format!(
                    "{} did not answer within {:?}",
                    args.url, args.timeout
                )),
            };
            match deadline {
                Some(d) if tokio::time::Instant::now() < d => {
                    tracing::debug!(error = %outcome, "not yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                _ => return Err(outcome),
            }
        }
    })
}

fn authority_error(e: authority::Error) -> Error {
    match e {
        authority::Error::Config(msg) => Error::Usage(msg),
        authority::Error::Store(s) => Error::Store(s),
        other => Error::Service(other.to_string()),
    }
}
