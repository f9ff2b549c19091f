//! The offline PKI commands: the same `trust-core` code the sidecar and the authority run,
//! driven from files. Secrets are written 0600 and never printed.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use trust_core::signature::{self, SignatureWindow, verify_request};
use trust_core::{
    CertificateVerifier, MessageSigner, NamePolicy, NodeKey, ReceivedHeaders, RequestParts,
    RevocationList, RootCertificate, Serial, TrustDomain, UnixTime, Usage, VerifiedCsr,
    VerifySettings,
};
use trust_store::{CaDirectory, Revoked};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::cli::{
    CaCommand, CertCommand, KeyCommand, MessageCommand, NamePolicyArgs, RequestArgs, UsageArg,
};
use crate::error::{Error, Result};

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
            println!("root CA created in {}", state.state_dir.display());
            println!("  certificate: {}", dir.cert_path().display());
            println!("  CRL:         {}", dir.crl_path().display());
            println!("  fingerprint: {}", dir.ca().root().fingerprint());
            println!("  trust domain: {domain}");
            Ok(())
        }
        CaCommand::Import { state, cert, key } => {
            let cert_pem = read_text(&cert)?;
            let key_pem = read_text(&key)?;
            let ca = trust_core::CertificateAuthority::from_pem(&cert_pem, &key_pem)
                .map_err(Error::bad_input(&cert))?;
            let mut dir = CaDirectory::import(&state.state_dir, ca)?;
            dir.publish_crl(UnixTime::now(), Duration::from_secs(24 * 3600))?;
            println!(
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
            println!(
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
            println!("key:         {} (0600)", key_path.display());
            println!("certificate: {}", cert_path.display());
            println!("serial:      {}", issued.serial);
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
                Revoked::Now => println!(
                    "revoked serial {serial}; CRL number {} published to {}",
                    crl.number,
                    dir.crl_path().display()
                ),
                Revoked::Already => println!(
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
            println!("RSA-2048 key written to {} (0600)", out.display());
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
            println!("certificate request written to {}", out.display());
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
            println!(
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
            println!("subject:     {}", c.subject());
            println!("issuer:      {}", c.issuer());
            println!(
                "serial:      {}",
                Serial::from_bytes(c.tbs_certificate.raw_serial())
            );
            println!("not before:  {}", c.validity().not_before);
            println!("not after:   {}", c.validity().not_after);
            let bits = c.public_key().parsed().map(|k| k.key_size()).unwrap_or(0);
            println!(
                "key:         {} bits ({})",
                bits,
                c.public_key().algorithm.algorithm.to_id_string()
            );
            println!("CA:          {}", c.is_ca());
            if let Ok(Some(san)) = c.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(d) => println!("SAN DNS:     {d}"),
                        GeneralName::IPAddress(b) => println!("SAN IP:      {}", format_ip(b)),
                        GeneralName::URI(u) => println!("SAN URI:     {u}"),
                        other => println!("SAN other:   {other:?}"),
                    }
                }
            }
            println!("fingerprint: {}", trust_core::Fingerprint::of_der(&der));
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
                println!("{}: {value}", display_name(name));
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
            println!(
                "ok: signed by node {} at {} with nonce {}",
                facts.node, facts.timestamp, facts.nonce
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
