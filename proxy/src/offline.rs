//! The offline PKI commands: the same `trust-core` code the sidecar and the authority run,
//! driven from files. Secrets are written 0600 and never printed.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand, ValueEnum};
use trust_core::signature::{self, SignatureWindow, verify_request};
use trust_core::{
    CertificateVerifier, MessageSigner, NamePolicy, NodeKey, ReceivedHeaders, RequestParts,
    RevocationList, RootCertificate, Serial, TrustDomain, UnixTime, Usage, VerifiedCsr,
    VerifySettings,
};
use trust_store::{CaDirectory, Revoked};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::error::{Error, Result};
use crate::out::out;

/// Where the CA keeps its state.
#[derive(Debug, Args)]
pub struct StateDir {
    /// The CA's state directory (key 0600, certificate, revocation log, CRL).
    #[arg(long, default_value = "/etc/sovereign/certs", env = "TRUST_STATE_DIR")]
    pub state_dir: PathBuf,
}

/// Who a certificate is for.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SubjectArg {
    /// A node, by its numeric id (SPIFFE id spiffe://<domain>/node/<id>).
    #[arg(long)]
    pub node_id: Option<String>,
    /// An operator, by name (SPIFFE id spiffe://<domain>/admin/<name>, role admin).
    #[arg(long)]
    pub admin: Option<String>,
}

/// Names granted in certificates.
#[derive(Debug, Args)]
pub struct NamePolicyArgs {
    /// DNS names the CA grants: exact names or `*.suffix`. Default: localhost, *.localhost.
    #[arg(long = "allow-dns", value_name = "PATTERN")]
    pub allow_dns: Vec<String>,
    /// Address ranges the CA grants (CIDR). Default: 127.0.0.0/8, ::1/128.
    #[arg(long = "allow-ip", value_name = "CIDR")]
    pub allow_ip: Vec<String>,
}

/// `trust-proxy ca ...`
#[derive(Debug, Subcommand)]
#[allow(
    missing_docs,
    reason = "flattened argument groups carry their own docs"
)]
pub enum CaCommand {
    /// Create a new root CA (RSA-4096, 10 years) in the state directory.
    #[command(
        after_help = "Example:\n  trust-proxy ca init --state-dir ./certs --trust-domain sovereign.local"
    )]
    Init {
        #[command(flatten)]
        state: StateDir,
        /// The SPIFFE trust domain of the network.
        #[arg(long, default_value = "sovereign.local")]
        trust_domain: String,
        /// The root's common name.
        #[arg(long, default_value = "Sovereign Trust Root CA")]
        name: String,
    },
    /// Bring an existing root (certificate + PKCS#8 key) into a new state directory, for the
    /// authority to use instead of creating one.
    #[command(
        after_help = "Example:\n  trust-proxy ca import --state-dir ./authority --cert my-root.pem --key my-root-key.pem"
    )]
    Import {
        #[command(flatten)]
        state: StateDir,
        /// The root certificate (PEM): CA:TRUE, keyCertSign + cRLSign, URI SAN spiffe://<domain>.
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (unencrypted PKCS#8 PEM, RSA).
        #[arg(long)]
        key: PathBuf,
    },
    /// Issue a certificate (1 year) from a node's CSR.
    #[command(
        after_help = "Example:\n  trust-proxy ca issue --state-dir ./certs --node-id 3 --csr node-3.csr --out node-3-cert.pem"
    )]
    Issue {
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        subject: SubjectArg,
        /// The PEM certificate request the node made (`trust-proxy key csr`).
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the PEM certificate (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        names: NamePolicyArgs,
    },
    /// Development shortcut: make a key here and issue its certificate (the key is written
    /// 0600 beside the certificate). In production nodes make their own keys.
    #[command(
        after_help = "Example:\n  trust-proxy ca issue-dev --state-dir ./certs --node-id 1 --out-dir ./node-1\n  writes ./node-1/node-1-key.pem (0600) and ./node-1/node-1-cert.pem"
    )]
    IssueDev {
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        subject: SubjectArg,
        /// Folder for `<name>-key.pem` and `<name>-cert.pem`.
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS names to put in the certificate.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses to put in the certificate.
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[command(flatten)]
        names: NamePolicyArgs,
    },
    /// Revoke a certificate and publish a new CRL at once.
    #[command(
        after_help = "Example:\n  trust-proxy ca revoke --state-dir ./certs --cert node-3-cert.pem"
    )]
    Revoke {
        #[command(flatten)]
        state: StateDir,
        /// The certificate to revoke.
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        cert: Option<PathBuf>,
        /// Or its serial, in hex (as `openssl x509 -serial` prints it).
        #[arg(long)]
        serial: Option<String>,
        /// How long the new CRL is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
    /// Sign and publish a fresh CRL (new number) and print it.
    #[command(after_help = "Example:\n  trust-proxy ca crl --state-dir ./certs --out crl.pem")]
    Crl {
        #[command(flatten)]
        state: StateDir,
        /// How long the CRL is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        validity: Duration,
        /// Also write it here (PEM, or DER with --der).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write DER instead of PEM.
        #[arg(long, requires = "out")]
        der: bool,
    },
}

/// `trust-proxy key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an RSA-2048 node key (PKCS#8 PEM, written 0600).
    Generate {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a certificate request for a key.
    #[command(
        after_help = "Example:\n  trust-proxy key csr --key node-key.pem --dns localhost --ip 127.0.0.1 --out node.csr"
    )]
    Csr {
        /// The node's private key.
        #[arg(long)]
        key: PathBuf,
        /// Subject common name (the CA replaces it with node-<id>).
        #[arg(long, default_value = "node")]
        name: String,
        /// DNS names to ask for.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses to ask for.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Where to write the PEM CSR (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `trust-proxy cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Verify a certificate as a sidecar would: chain, validity, usage, key, CRL, identity.
    /// Exit 0 and print the identity, or exit 1 and print why not.
    #[command(
        after_help = "Example:\n  trust-proxy cert verify --ca ca-cert.pem --crl crl.pem node-3-cert.pem"
    )]
    Verify {
        /// The certificate (PEM).
        cert: PathBuf,
        /// The network's root certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The current CRL (PEM). Verification fails closed without one.
        #[arg(long)]
        crl: PathBuf,
        /// Check it as a client (ingress) or server (egress) certificate.
        #[arg(long, value_enum, default_value_t = UsageArg::Client)]
        usage: UsageArg,
        /// Verify at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Show a certificate's subject, SANs, key, validity, serial and fingerprint.
    Inspect {
        /// The certificate (PEM).
        cert: PathBuf,
    },
}

/// Certificate use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageArg {
    /// clientAuth.
    Client,
    /// serverAuth.
    Server,
}

/// The request being signed or verified.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Full URL as the sender addresses it, e.g. http://node-2.localhost:8443/fl/update.
    #[arg(long)]
    pub url: String,
    /// File holding the body (empty body if absent).
    #[arg(long)]
    pub body: Option<PathBuf>,
}

/// `trust-proxy message ...`
#[derive(Debug, Subcommand)]
#[allow(
    missing_docs,
    reason = "flattened argument groups carry their own docs"
)]
pub enum MessageCommand {
    /// Sign a request; prints the five X-* headers as `Name: value` lines.
    #[command(
        after_help = "Example:\n  trust-proxy message sign --key node-1-key.pem --cert node-1-cert.pem \\\n      --url http://node-2.localhost:8443/fl/update --body update.json"
    )]
    Sign {
        /// The signer's private key.
        #[arg(long)]
        key: PathBuf,
        /// The signer's certificate (gives its id and fingerprint).
        #[arg(long)]
        cert: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// Sign at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Verify a signed request received from the peer whose certificate is given.
    #[command(
        after_help = "Example:\n  trust-proxy message verify --ca ca-cert.pem --crl crl.pem --peer node-1-cert.pem \\\n      --headers headers.txt --url http://node-2.localhost:8443/fl/update --body update.json"
    )]
    Verify {
        /// The TLS peer's certificate (PEM).
        #[arg(long)]
        peer: PathBuf,
        /// The network's root certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The current CRL (PEM).
        #[arg(long)]
        crl: PathBuf,
        /// File with the received headers as `Name: value` lines.
        #[arg(long)]
        headers: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// Verify at this unix time instead of now.
        #[arg(long)]
        at: Option<u64>,
        /// Oldest accepted signature age.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        max_age: Duration,
    },
}

impl SubjectArg {
    /// The subject named on the command line.
    pub fn subject(&self) -> crate::Result<trust_core::Subject> {
        match (&self.node_id, &self.admin) {
            (Some(id), None) => id
                .parse()
                .map(trust_core::Subject::Node)
                .map_err(|e| Error::Usage(format!("--node-id: {e}"))),
            (None, Some(name)) => name
                .parse()
                .map(trust_core::Subject::Admin)
                .map_err(|e| Error::Usage(format!("--admin: {e}"))),
            _ => Err(Error::Usage(
                "give exactly one of --node-id or --admin".into(),
            )),
        }
    }
}

/// `trust-proxy ca ...`
pub fn ca(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init {
            state,
            trust_domain,
            name,
        } => {
            let domain: TrustDomain = trust_domain
                .parse()
                .map_err(|e| Error::Usage(format!("--trust-domain: {e}")))?;
            eprintln!("generating the RSA-4096 root key (about a second)...");
            let mut dir = CaDirectory::init(&state.state_dir, &domain, &name, UnixTime::now())?;
            dir.publish_crl(UnixTime::now(), Duration::from_secs(24 * 3600))?;
            out!("root CA created in {}", state.state_dir.display());
            out!("  certificate: {}", dir.cert_path().display());
            out!("  CRL:         {}", dir.crl_path().display());
            out!("  fingerprint: {}", dir.ca().root().fingerprint());
            out!("  trust domain: {domain}");
            Ok(())
        }
        CaCommand::Import { state, cert, key } => {
            let cert_pem = read_text(&cert)?;
            let key_pem = read_text(&key)?;
            let ca = trust_core::CertificateAuthority::from_pem(&cert_pem, &key_pem)
                .map_err(Error::bad_input(&cert))?;
            let mut dir = CaDirectory::import(&state.state_dir, ca)?;
            dir.publish_crl(UnixTime::now(), Duration::from_secs(24 * 3600))?;
            out!(
                "root imported into {} (fingerprint {})",
                state.state_dir.display(),
                dir.ca().root().fingerprint()
            );
            Ok(())
        }
        CaCommand::Issue {
            state,
            subject,
            csr,
            out,
            names,
        } => {
            let subject = subject.subject()?;
            let dir = CaDirectory::open(&state.state_dir)?;
            let policy = name_policy(&names)?;
            let text = read_text(&csr)?;
            let request = VerifiedCsr::from_pem(&text, &policy).map_err(Error::bad_input(&csr))?;
            let issued = dir.ca().issue(&request, &subject, UnixTime::now())?;
            write_new(&out, issued.pem.as_bytes(), 0o644)?;
            out!(
                "issued {} serial {} -> {}",
                subject.spiffe_id(dir.ca().root().trust_domain()),
                issued.serial,
                out.display()
            );
            Ok(())
        }
        CaCommand::IssueDev {
            state,
            subject,
            out_dir,
            dns,
            ip,
            names,
        } => {
            let subject = subject.subject()?;
            let dir = CaDirectory::open(&state.state_dir)?;
            let policy = name_policy(&names)?;
            let key = NodeKey::generate()?;
            let csr_pem = key.certificate_request(&subject.common_name(), &dns, &ip)?;
            let request = VerifiedCsr::from_pem(&csr_pem, &policy)
                .map_err(|e| Error::Usage(format!("--dns/--ip: {e}")))?;
            let issued = dir.ca().issue(&request, &subject, UnixTime::now())?;
            fs::create_dir_all(&out_dir).map_err(|source| Error::CannotCreate {
                path: out_dir.clone(),
                source,
            })?;
            let stem = subject.common_name();
            let key_path = out_dir.join(format!("{stem}-key.pem"));
            let cert_path = out_dir.join(format!("{stem}-cert.pem"));
            write_new(&key_path, key.to_pkcs8_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, issued.pem.as_bytes(), 0o644)?;
            out!("key:         {} (0600)", key_path.display());
            out!("certificate: {}", cert_path.display());
            out!("serial:      {}", issued.serial);
            Ok(())
        }
        CaCommand::Revoke {
            state,
            cert,
            serial,
            validity,
        } => {
            let mut dir = CaDirectory::open(&state.state_dir)?;
            let (serial, subject) = match (cert, serial) {
                (Some(path), None) => {
                    let der = read_cert_der(&path)?;
                    let (_, parsed) =
                        X509Certificate::from_der(&der).map_err(|e| Error::BadInput {
                            path: path.clone(),
                            detail: e.to_string(),
                        })?;
                    (
                        Serial::from_bytes(parsed.tbs_certificate.raw_serial()),
                        Some(parsed.subject().to_string()),
                    )
                }
                (None, Some(hex)) => (
                    Serial::from_hex(&hex).map_err(|e| Error::Usage(format!("--serial: {e}")))?,
                    None,
                ),
                _ => {
                    return Err(Error::Usage(
                        "give exactly one of --cert or --serial".into(),
                    ));
                }
            };
            let outcome = dir.revoke(&serial, subject, UnixTime::now())?;
            let crl = dir.publish_crl(UnixTime::now(), validity)?;
            match outcome {
                Revoked::Now => out!(
                    "revoked serial {serial}; CRL number {} published to {}",
                    crl.number,
                    dir.crl_path().display()
                ),
                Revoked::Already => out!(
                    "serial {serial} was already revoked; CRL number {} republished",
                    crl.number
                ),
            }
            Ok(())
        }
        CaCommand::Crl {
            state,
            validity,
            out,
            der,
        } => {
            let mut dir = CaDirectory::open(&state.state_dir)?;
            let crl = dir.publish_crl(UnixTime::now(), validity)?;
            if let Some(out) = out {
                let bytes = if der {
                    crl.der.clone()
                } else {
                    crl.pem.clone().into_bytes()
                };
                write_new(&out, &bytes, 0o644)?;
                eprintln!("CRL number {} written to {}", crl.number, out.display());
            } else {
                print!("{}", crl.pem);
            }
            Ok(())
        }
    }
}

/// `trust-proxy key ...`
pub fn key(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Generate { out } => {
            let key = NodeKey::generate()?;
            write_new(&out, key.to_pkcs8_pem().as_bytes(), 0o600)?;
            out!("RSA-2048 key written to {} (0600)", out.display());
            Ok(())
        }
        KeyCommand::Csr {
            key,
            name,
            dns,
            ip,
            out,
        } => {
            let node_key = read_key(&key)?;
            let csr = node_key
                .certificate_request(&name, &dns, &ip)
                .map_err(|e| Error::Usage(format!("--dns: {e}")))?;
            write_new(&out, csr.as_bytes(), 0o644)?;
            out!("certificate request written to {}", out.display());
            Ok(())
        }
    }
}

/// `trust-proxy cert ...`
pub fn cert(command: CertCommand) -> Result<()> {
    match command {
        CertCommand::Verify {
            cert,
            ca,
            crl,
            usage,
            at,
        } => {
            let root = read_root(&ca)?;
            let time = at.map_or_else(UnixTime::now, trust_core::unix_time);
            let crl = read_crl(&crl, &root, time)?;
            let der = read_cert_der(&cert)?;
            let settings = VerifySettings {
                usage: match usage {
                    UsageArg::Client => Usage::ClientAuth,
                    UsageArg::Server => Usage::ServerAuth,
                },
                ..VerifySettings::default()
            };
            let identity = CertificateVerifier::new(root, settings)
                .verify(&der, Some(&crl), time)
                .map_err(|e| Error::Refused(e.to_string()))?;
            out!(
                "ok: {} (roles: {}), serial {}, fingerprint {}, expires {}",
                identity.spiffe_id,
                identity
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                identity.serial,
                identity.fingerprint,
                format_time(identity.not_after)
            );
            Ok(())
        }
        CertCommand::Inspect { cert } => {
            let der = read_cert_der(&cert)?;
            let (_, c) = X509Certificate::from_der(&der).map_err(|e| Error::BadInput {
                path: cert.clone(),
                detail: e.to_string(),
            })?;
            out!("subject:     {}", c.subject());
            out!("issuer:      {}", c.issuer());
            out!(
                "serial:      {}",
                Serial::from_bytes(c.tbs_certificate.raw_serial())
            );
            out!("not before:  {}", c.validity().not_before);
            out!("not after:   {}", c.validity().not_after);
            let bits = c.public_key().parsed().map(|k| k.key_size()).unwrap_or(0);
            out!(
                "key:         {} bits ({})",
                bits,
                c.public_key().algorithm.algorithm.to_id_string()
            );
            out!("CA:          {}", c.is_ca());
            if let Ok(Some(san)) = c.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(d) => out!("SAN DNS:     {d}"),
                        GeneralName::IPAddress(b) => out!("SAN IP:      {}", format_ip(b)),
                        GeneralName::URI(u) => out!("SAN URI:     {u}"),
                        other => out!("SAN other:   {other:?}"),
                    }
                }
            }
            out!("fingerprint: {}", trust_core::Fingerprint::of_der(&der));
            Ok(())
        }
    }
}

/// `trust-proxy message ...`
pub fn message(command: MessageCommand) -> Result<()> {
    match command {
        MessageCommand::Sign {
            key,
            cert,
            request,
            at,
        } => {
            let node_key = read_key(&key)?;
            let der = read_cert_der(&cert)?;
            let subject = subject_of(&cert, &der)?;
            let signer = MessageSigner::new(node_key, &subject, &der);
            let (authority, path) = split_url(&request.url)?;
            let body = read_body(&request)?;
            let parts = RequestParts::new(&request.method, &authority, &path, &body);
            let time = at.map_or_else(UnixTime::now, trust_core::unix_time);
            let headers = signer
                .sign(&parts, time)
                .map_err(|e| Error::Usage(format!("--method/--url: {e}")))?;
            for (name, value) in headers.pairs() {
                out!("{}: {value}", display_name(name));
            }
            Ok(())
        }
        MessageCommand::Verify {
            peer,
            ca,
            crl,
            headers,
            request,
            at,
            max_age,
        } => {
            let root = read_root(&ca)?;
            let time = at.map_or_else(UnixTime::now, trust_core::unix_time);
            let crl = read_crl(&crl, &root, time)?;
            let der = read_cert_der(&peer)?;
            let identity = CertificateVerifier::new(root, VerifySettings::default())
                .verify(&der, Some(&crl), time)
                .map_err(|e| Error::Refused(format!("peer certificate: {e}")))?;
            let text = read_text(&headers)?;
            let map = parse_header_lines(&text).map_err(|detail| Error::BadInput {
                path: headers.clone(),
                detail,
            })?;
            let get = |name: &str| map.get(name).map(String::as_str);
            let received = ReceivedHeaders {
                from_node: get(signature::header::FROM_NODE),
                timestamp: get(signature::header::TIMESTAMP),
                nonce: get(signature::header::NONCE),
                node_auth: get(signature::header::NODE_AUTH),
                signature: get(signature::header::SIGNATURE),
            };
            let (authority, path) = split_url(&request.url)?;
            let body = read_body(&request)?;
            let parts = RequestParts::new(&request.method, &authority, &path, &body);
            let window = SignatureWindow {
                max_age,
                ..SignatureWindow::default()
            };
            let facts = verify_request(
                &received,
                &parts,
                &identity,
                std::slice::from_ref(&authority),
                window,
                time,
            )
            .map_err(|r| Error::Refused(format!("{} ({r})", r.label())))?;
            out!(
                "ok: signed by node {} at {} with nonce {}",
                facts.node,
                facts.timestamp,
                facts.nonce
            );
            Ok(())
        }
    }
}

fn format_time(t: UnixTime) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
        .to_string()
}

fn format_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .map(|b| std::net::IpAddr::from(b).to_string())
            .unwrap_or_default(),
        16 => <[u8; 16]>::try_from(bytes)
            .map(|b| std::net::IpAddr::from(b).to_string())
            .unwrap_or_default(),
        _ => format!("{bytes:02x?}"),
    }
}

/// The name policy from `--allow-dns`/`--allow-ip` (loopback names when neither is given).
pub fn name_policy(args: &NamePolicyArgs) -> Result<NamePolicy> {
    if args.allow_dns.is_empty() && args.allow_ip.is_empty() {
        return Ok(NamePolicy::loopback());
    }
    let ips = args
        .allow_ip
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                Error::Usage(format!(
                    "--allow-ip {s:?}: expected CIDR such as 10.0.0.0/8"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(NamePolicy {
        dns: args
            .allow_dns
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        ips,
    })
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(Error::no_input(path))
}

fn read_key(path: &Path) -> Result<NodeKey> {
    NodeKey::from_pkcs8_pem(&read_text(path)?).map_err(Error::bad_input(path))
}

fn read_root(path: &Path) -> Result<RootCertificate> {
    RootCertificate::from_pem(&read_text(path)?).map_err(Error::bad_input(path))
}

fn read_crl(path: &Path, root: &RootCertificate, time: UnixTime) -> Result<RevocationList> {
    RevocationList::from_pem(&read_text(path)?, root, time).map_err(Error::bad_input(path))
}

fn read_cert_der(path: &Path) -> Result<Vec<u8>> {
    let text = read_text(path)?;
    let block = pem::parse(&text).map_err(|e| Error::BadInput {
        path: path.to_owned(),
        detail: format!("not PEM: {e}"),
    })?;
    if block.tag() != "CERTIFICATE" {
        return Err(Error::BadInput {
            path: path.to_owned(),
            detail: format!("expected a CERTIFICATE block, found {:?}", block.tag()),
        });
    }
    Ok(block.into_contents())
}

fn read_body(request: &RequestArgs) -> Result<Vec<u8>> {
    match &request.body {
        Some(path) => fs::read(path).map_err(Error::no_input(path)),
        None => Ok(Vec::new()),
    }
}

/// The subject a certificate names in its SPIFFE URI (trust domain not checked here:
/// `message verify` checks the full certificate).
fn subject_of(path: &Path, der: &[u8]) -> Result<trust_core::Subject> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| Error::BadInput {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let uri = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
        })
        .ok_or_else(|| Error::BadInput {
            path: path.to_owned(),
            detail: "no SPIFFE URI SAN: not a certificate of this network".into(),
        })?;
    let domain = uri
        .strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .and_then(|d| d.parse::<TrustDomain>().ok())
        .ok_or_else(|| Error::BadInput {
            path: path.to_owned(),
            detail: format!("URI SAN {uri:?} is not a SPIFFE id"),
        })?;
    trust_core::Subject::from_spiffe_id(&uri, &domain).map_err(|detail| Error::BadInput {
        path: path.to_owned(),
        detail,
    })
}

/// Splits `http://host:port/path?q` into the authority and the path with query.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| Error::Usage(format!("--url {url:?}: expected http://host[:port]/path")))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(Error::Usage(format!("--url {url:?}: no host")));
    }
    Ok((authority.to_ascii_lowercase(), path))
}

fn parse_header_lines(text: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected `Name: value`", n + 1))?;
        let name = name.trim().to_ascii_lowercase();
        if map.insert(name.clone(), value.trim().to_owned()).is_some() {
            return Err(format!("line {}: header {name} appears twice", n + 1));
        }
    }
    Ok(map)
}

fn display_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes a new file with `mode`; refuses to overwrite.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let created = |source| Error::CannotCreate {
        path: PathBuf::from(path),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(created)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(created)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://Node-2.localhost:8443/fl/update?r=1").unwrap(),
            ("node-2.localhost:8443".into(), "/fl/update?r=1".into())
        );
        assert_eq!(split_url("http://h:1").unwrap(), ("h:1".into(), "/".into()));
        assert_eq!(
            split_url("http://h:1?x=1").unwrap(),
            ("h:1".into(), "/?x=1".into())
        );
        assert!(split_url("ftp://h/").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn header_files_refuse_duplicates_and_junk() {
        assert_eq!(
            parse_header_lines("X-Nonce: a\n\nx-timestamp: 1\n")
                .unwrap()
                .len(),
            2
        );
        assert!(
            parse_header_lines("X-Nonce: a\nx-nonce: b")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse_header_lines("garbage").is_err());
        assert_eq!(display_name("x-from-node"), "X-From-Node");
    }
}
