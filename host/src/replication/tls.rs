//! The cluster certificates and mutual TLS between nodes (the peer QUIC connections of
//! replication).
//!
//! One cluster CA (`vektagraf certs init DIR`: `ca.pem`, `ca.key`) signs one certificate per node
//! (`vektagraf certs node ID --ca DIR`: `node.pem`, `node.key`). A peer connection is mutual
//! TLS 1.3 with ALPN [`PEER_ALPN`]: each side presents its node certificate and accepts only
//! certificates the cluster CA signed ([`PeerTls`]); then each side reads the other's node id
//! from its certificate ([`peer_node_id`]).
//!
//! **The node id in a certificate** is a URI subject alternative name `urn:vektagraf:node:<id>`
//! ([`NODE_ID_URI_PREFIX`]), exactly one per certificate. An id is an identity, not a host
//! name, and a URI name is the standard place for such (SPIFFE puts its ids there the same way):
//! host-name checks ignore URI names, so an id is never taken for a host name, nor a host name
//! (from `--name`, say) for an id. The common name is only a label for people.
//!
//! **Host names.** A node certificate is also valid, as a server, for `localhost`, the id itself
//! (when it is a host name on its own: `1` is not, as it reads as an IPv4 number),
//! [`server_name`]`(id)` = `<id>.node.vektagraf.internal`, 127.0.0.1, ::1 and the extra names
//! given; so the same certificate serves the client-facing QUIC port, whose clients trust the
//! cluster CA. A node dialling peer `X` asks for [`server_name`]`(X)`, so the handshake itself
//! checks that it reached `X` (a certificate of another node of the cluster is refused). The
//! `.internal` top-level domain is reserved for private use and never resolves: the name is
//! only checked against the certificate, the address comes from the configuration.
//!
//! **Files.** `node.pem` holds the node certificate followed by the CA certificate (the chain,
//! as the development certificate of `server::tls` has it; a peer already has the CA, other
//! tools may want the chain), `node.key` its private key. Keys are written with mode 0600 and
//! nothing is ever overwritten. Certificates are valid for ten years from an hour ago (a node's
//! never beyond its CA's): a development CA; rotation is replacing the files and restarting.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use sha2::Digest;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

/// The ALPN protocol of node-to-node connections (clients use `vektagraf/1`).
pub const PEER_ALPN: &[u8] = b"vektagraf-peer/1";

/// A node certificate names its node with a URI subject alternative name: this, then the id.
pub const NODE_ID_URI_PREFIX: &str = "urn:vektagraf:node:";

/// The longest node id: a DNS label, so that [`server_name`] is a host name.
pub const MAX_NODE_ID_LEN: usize = 63;

/// The file names `create_ca` and `create_node_cert` write.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_KEY_FILE: &str = "node.key";

/// Appended to a node id to make the host name its certificate is checked against.
const SERVER_NAME_SUFFIX: &str = ".node.vektagraf.internal";
const VALIDITY_DAYS: i64 = 3650;

/// What went wrong, naming the file or the certificate concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerTlsError {
    #[error(
        "invalid node id {id:?}: {reason} (a node id is 1 to 63 characters of a-z, 0-9 and `-`, \
         not starting or ending with `-`)"
    )]
    InvalidNodeId { id: String, reason: &'static str },
    #[error("invalid host name {name:?}: neither an IP address nor a DNS name")]
    InvalidHostName { name: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists; refusing to overwrite it (remove it first to make a new one)", path.display())]
    AlreadyExists { path: PathBuf },
    #[error(
        "no cluster CA in {}: {CA_CERT_FILE} or {CA_KEY_FILE} is missing (make one with \
         `vektagraf certs init DIR`)",
        dir.display()
    )]
    NoCa { dir: PathBuf },
    #[error("{}: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("{what} is not a usable certificate: {detail}")]
    BadCertificate { what: String, detail: String },
    #[error("{} is not a CA certificate", path.display())]
    NotCa { path: PathBuf },
    #[error("{} is not the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{what} carries no node id (a URI subject alternative name `{NODE_ID_URI_PREFIX}<id>`; \
         node certificates are made with `vektagraf certs node`)"
    )]
    NoNodeId { what: String },
    #[error("{what} carries several node ids ({})", ids.join(", "))]
    AmbiguousNodeId { what: String, ids: Vec<String> },
    #[error("{what} carries an invalid node id {id:?}: {reason}")]
    InvalidNodeIdInCertificate {
        what: String,
        id: String,
        reason: &'static str,
    },
    #[error("{} is not valid under the cluster CA in {}: {source}", cert.display(), ca.display())]
    NotTrusted {
        cert: PathBuf,
        ca: PathBuf,
        source: rustls::Error,
    },
    #[error("{what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("TLS configuration: {what}: {detail}")]
    Config { what: String, detail: String },
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
}

/// Checks a node id: 1 to [`MAX_NODE_ID_LEN`] characters of `a-z`, `0-9` and `-`, not starting
/// or ending with `-` (a DNS label; `eu-west-1`, `a`, `7`).
pub fn check_node_id(id: &str) -> Result<(), PeerTlsError> {
    match node_id_problem(id) {
        None => Ok(()),
        Some(reason) => Err(PeerTlsError::InvalidNodeId {
            id: id.to_owned(),
            reason,
        }),
    }
}

fn node_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_NODE_ID_LEN {
        Some("it is longer than 63 characters")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("it has a character other than a-z, 0-9 and `-`")
    } else if id.starts_with('-') || id.ends_with('-') {
        Some("it starts or ends with `-`")
    } else {
        None
    }
}

/// The server name to connect to node `id` with (`quinn::Endpoint::connect_with(config, addr,
/// &server_name(id))`): `<id>.node.vektagraf.internal`, which only that node's certificate
/// covers.
pub fn server_name(id: &str) -> String {
    format!("{id}{SERVER_NAME_SUFFIX}")
}

/// The files of a cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `ca.pem`: what nodes (and clients of the client port) trust.
    pub cert: PathBuf,
    /// `ca.key` (mode 0600): signs node certificates; keep it off the nodes if you can.
    pub key: PathBuf,
}

/// The files of a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// `node.pem`: the node certificate, then the CA certificate.
    pub cert: PathBuf,
    /// `node.key` (mode 0600).
    pub key: PathBuf,
    /// The host names and IP addresses the certificate is valid for, as a server.
    pub names: Vec<String>,
}

/// Creates a cluster CA in `dir` (made if missing): `ca.pem` and `ca.key`. Refuses if either
/// file exists already.
pub fn create_ca(dir: &Path) -> Result<CaFiles, PeerTlsError> {
    let files = CaFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    refuse_existing(&[&files.cert, &files.key])?;
    create_dir(dir)?;
    let key = KeyPair::generate().map_err(generate("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A name of its own (from its key), so that a certificate of another cluster's CA is
    // refused as from an unknown issuer rather than with a bad signature.
    let fingerprint = sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key));
    let tag: String = fingerprint[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Vektagraf cluster CA {tag}"));
    // Signs node certificates directly; no intermediate CAs below it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = now();
    params.not_before = now.saturating_sub(time::Duration::hours(1));
    params.not_after = now.saturating_add(time::Duration::days(VALIDITY_DAYS));
    let cert = params
        .self_signed(&key)
        .map_err(generate("signing the CA certificate"))?;
    write_pair(
        (&files.cert, &cert.pem()),
        (&files.key, &key.serialize_pem()),
    )?;
    Ok(files)
}

/// Creates the certificate of node `id`, signed by the CA in `ca_dir`, in `out_dir` (made if
/// missing): `node.pem` (certificate, then the CA certificate) and `node.key`. `extra_names`
/// are more host names or IP addresses it is valid for. Refuses if either file exists already.
pub fn create_node_cert(
    ca_dir: &Path,
    id: &str,
    extra_names: &[String],
    out_dir: &Path,
) -> Result<NodeFiles, PeerTlsError> {
    check_node_id(id)?;
    for name in extra_names {
        check_host_name(name)?;
    }
    let files_cert = out_dir.join(NODE_CERT_FILE);
    let files_key = out_dir.join(NODE_KEY_FILE);
    refuse_existing(&[&files_cert, &files_key])?;
    let ca = load_ca(ca_dir)?;

    let mut names = vec!["localhost".to_owned()];
    if DnsName::try_from(id).is_ok() {
        names.push(id.to_owned());
    }
    names.push(server_name(id));
    names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut params =
        CertificateParams::new(names.clone()).map_err(generate("the certificate's names"))?;
    let uri = format!("{NODE_ID_URI_PREFIX}{id}");
    params.subject_alt_names.push(SanType::URI(
        uri.as_str()
            .try_into()
            .map_err(generate("the node id name"))?,
    ));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("vektagraf node {id}"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = now();
    params.not_before = now.saturating_sub(time::Duration::hours(1));
    params.not_after = now
        .saturating_add(time::Duration::days(VALIDITY_DAYS))
        .min(ca.not_after);
    let key = KeyPair::generate().map_err(generate("generating the node key"))?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(generate("signing the node certificate"))?;

    create_dir(out_dir)?;
    let mut chain = cert.pem();
    chain.push_str(&ca.pem);
    if !chain.ends_with('\n') {
        chain.push('\n');
    }
    write_pair((&files_cert, &chain), (&files_key, &key.serialize_pem()))?;
    Ok(NodeFiles {
        cert: files_cert,
        key: files_key,
        names,
    })
}

/// The TLS of a node's peer connections: its QUIC server and client configurations (mutual
/// TLS under the cluster CA, ALPN [`PEER_ALPN`], TLS 1.3) and its node id. Set the transport
/// (`transport_config`) on the configurations before use.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// Accepts peers: requires a client certificate signed by the cluster CA.
    pub server: quinn::ServerConfig,
    /// Dials peers: presents the node certificate, trusts only the cluster CA; connect with
    /// [`server_name`] of the peer's id.
    pub client: quinn::ClientConfig,
    /// The id in our own certificate.
    pub node_id: String,
}

impl PeerTls {
    /// Loads the cluster CA (`ca.pem`, one or more certificates), the node certificate chain
    /// and its key. Refuses a certificate without a node id, and one the CA does not accept
    /// (another CA's, expired, or not valid for [`server_name`] of its id) — the peers would.
    pub fn load(ca_pem: &Path, cert: &Path, key: &Path) -> Result<Self, PeerTlsError> {
        let roots = read_certs(ca_pem)?;
        let chain = read_certs(cert)?;
        let key_der = read_key(key)?;
        let node_id = node_id_of(&chain[0], &cert.display().to_string())?;
        let (server_verifier, client_verifier) = verifiers(roots, ca_pem)?;
        let not_trusted = |source| PeerTlsError::NotTrusted {
            cert: cert.to_owned(),
            ca: ca_pem.to_owned(),
            source,
        };
        let now = UnixTime::now();
        client_verifier
            .verify_client_cert(&chain[0], &chain[1..], now)
            .map_err(not_trusted)?;
        let name =
            ServerName::try_from(server_name(&node_id)).map_err(|e| PeerTlsError::Config {
                what: format!("the server name of node {node_id}"),
                detail: e.to_string(),
            })?;
        server_verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], now)
            .map_err(not_trusted)?;
        // rustls checks this too, in words that name no file.
        match rustls::sign::CertifiedKey::from_der(chain.clone(), key_der.clone_key(), &provider())
        {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(PeerTlsError::KeyMismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                })
            }
            Err(e) => {
                return Err(PeerTlsError::Pem {
                    path: key.to_owned(),
                    detail: format!("unusable private key: {e}"),
                })
            }
        }
        build(node_id, server_verifier, client_verifier, chain, key_der)
    }
}

/// The node id of the peer of an established connection, from its certificate.
pub fn peer_node_id(conn: &quinn::Connection) -> Result<String, PeerTlsError> {
    let identity = conn
        .peer_identity()
        .ok_or(PeerTlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| PeerTlsError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(PeerTlsError::NoPeerCertificate)?;
    node_id_of(
        leaf,
        &format!("the certificate of peer {}", conn.remote_address()),
    )
}

/// The node id in a certificate (its one `urn:vektagraf:node:` URI name); `what` names the
/// certificate in errors.
fn node_id_of(cert: &CertificateDer<'_>, what: &str) -> Result<String, PeerTlsError> {
    let bad = |detail: String| PeerTlsError::BadCertificate {
        what: what.to_owned(),
        detail,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| bad(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| bad(format!("subject alternative names: {e}")))?;
    let mut ids: Vec<String> = Vec::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name {
            if let Some(id) = uri.strip_prefix(NODE_ID_URI_PREFIX) {
                if !ids.iter().any(|i| i == id) {
                    ids.push(id.to_owned());
                }
            }
        }
    }
    match ids.len() {
        0 => Err(PeerTlsError::NoNodeId {
            what: what.to_owned(),
        }),
        1 => {
            let id = ids.remove(0);
            match node_id_problem(&id) {
                None => Ok(id),
                Some(reason) => Err(PeerTlsError::InvalidNodeIdInCertificate {
                    what: what.to_owned(),
                    id,
                    reason,
                }),
            }
        }
        _ => Err(PeerTlsError::AmbiguousNodeId {
            what: what.to_owned(),
            ids,
        }),
    }
}

fn verifiers(
    roots: Vec<CertificateDer<'static>>,
    ca_pem: &Path,
) -> Result<(Arc<WebPkiServerVerifier>, Arc<dyn ClientCertVerifier>), PeerTlsError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store.add(cert).map_err(|e| PeerTlsError::BadCertificate {
            what: format!("the CA certificate in {}", ca_pem.display()),
            detail: e.to_string(),
        })?;
    }
    let store = Arc::new(store);
    let config = |e: &dyn std::fmt::Display| PeerTlsError::Config {
        what: format!("the cluster CA in {}", ca_pem.display()),
        detail: e.to_string(),
    };
    let server = WebPkiServerVerifier::builder_with_provider(store.clone(), provider())
        .build()
        .map_err(|e| config(&e))?;
    let client = WebPkiClientVerifier::builder_with_provider(store, provider())
        .build()
        .map_err(|e| config(&e))?;
    Ok((server, client))
}

/// Both QUIC configurations from verifiers, the node's chain and key.
fn build(
    node_id: String,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<PeerTls, PeerTlsError> {
    let config = |what: &str, e: &dyn std::fmt::Display| PeerTlsError::Config {
        what: what.to_owned(),
        detail: e.to_string(),
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config("server", &e))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| config("server certificate", &e))?;
    server.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config("client", &e))?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| config("client certificate", &e))?;
    client.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let quic = |e: &dyn std::fmt::Display| config("QUIC needs TLS 1.3 with AES-128-GCM", e);
    let server = QuicServerConfig::try_from(server).map_err(|e| quic(&e))?;
    let client = QuicClientConfig::try_from(client).map_err(|e| quic(&e))?;
    Ok(PeerTls {
        server: quinn::ServerConfig::with_crypto(Arc::new(server)),
        client: quinn::ClientConfig::new(Arc::new(client)),
        node_id,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    crate::server::tls::provider()
}

/// The CA of `ca_dir`, ready to sign.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// `ca.pem` as read, appended to node certificates.
    pem: String,
    not_after: OffsetDateTime,
}

fn load_ca(dir: &Path) -> Result<Ca, PeerTlsError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        return Err(PeerTlsError::NoCa {
            dir: dir.to_owned(),
        });
    }
    let pem = std::fs::read_to_string(&cert_path).map_err(io("reading", &cert_path))?;
    let key_pem = std::fs::read_to_string(&key_path).map_err(io("reading", &key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| PeerTlsError::Pem {
        path: key_path.clone(),
        detail: format!("not a private key in PEM form: {e}"),
    })?;
    let certs = read_certs(&cert_path)?;
    let what = cert_path.display().to_string();
    let (_, parsed) = x509_parser::parse_x509_certificate(&certs[0]).map_err(|e| {
        PeerTlsError::BadCertificate {
            what: what.clone(),
            detail: e.to_string(),
        }
    })?;
    if !parsed.is_ca() {
        return Err(PeerTlsError::NotCa { path: cert_path });
    }
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key) {
        return Err(PeerTlsError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    let not_after = parsed.validity().not_after.to_datetime();
    let issuer =
        Issuer::from_ca_cert_der(&certs[0], key).map_err(|e| PeerTlsError::BadCertificate {
            what,
            detail: e.to_string(),
        })?;
    Ok(Ca {
        issuer,
        pem,
        not_after,
    })
}

fn check_host_name(name: &str) -> Result<(), PeerTlsError> {
    let dns = name.strip_prefix("*.").unwrap_or(name);
    if name.parse::<IpAddr>().is_ok() || DnsName::try_from(dns).is_ok() {
        Ok(())
    } else {
        Err(PeerTlsError::InvalidHostName {
            name: name.to_owned(),
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PeerTlsError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PeerTlsError::Pem {
            path: path.to_owned(),
            detail: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PeerTlsError::Pem {
            path: path.to_owned(),
            detail: "no certificate (expected a `-----BEGIN CERTIFICATE-----` block)".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PeerTlsError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PeerTlsError::Pem {
        path: path.to_owned(),
        detail: format!("no private key in PEM form: {e}"),
    })
}

fn now() -> OffsetDateTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> PeerTlsError {
    move |source| PeerTlsError::Generate { what, source }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PeerTlsError {
    let path = path.to_owned();
    move |source| PeerTlsError::Io {
        action,
        path,
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), PeerTlsError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PeerTlsError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(PeerTlsError::AlreadyExists {
            path: p.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Writes a certificate and its key (mode 0600), both new files; if the second cannot be
/// written the first is removed again.
fn write_pair(cert: (&Path, &str), key: (&Path, &str)) -> Result<(), PeerTlsError> {
    write_new(key.0, key.1, true)?;
    if let Err(e) = write_new(cert.0, cert.1, false) {
        let _ = std::fs::remove_file(key.0);
        return Err(e);
    }
    Ok(())
}

fn write_new(path: &Path, text: &str, private: bool) -> Result<(), PeerTlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PeerTlsError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            io("writing", path)(e)
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("writing", path))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const PATIENCE: Duration = Duration::from_secs(10);

    /// A node's TLS from the files of `certs node`.
    fn node(ca_dir: &Path, id: &str, out: &Path) -> Result<PeerTls, PeerTlsError> {
        let files = create_node_cert(ca_dir, id, &[], out)?;
        PeerTls::load(&ca_dir.join(CA_CERT_FILE), &files.cert, &files.key)
    }

    /// A node presenting `cert`/`key` but trusting `ca_pem`, without `load`'s own check.
    fn mixed(ca_pem: &Path, files: &NodeFiles) -> Result<PeerTls, PeerTlsError> {
        let chain = read_certs(&files.cert)?;
        let node_id = node_id_of(&chain[0], "test")?;
        let (server, client) = verifiers(read_certs(ca_pem)?, ca_pem)?;
        build(node_id, server, client, chain, read_key(&files.key)?)
    }

    fn endpoint(tls: &PeerTls) -> Result<(quinn::Endpoint, SocketAddr), std::io::Error> {
        let endpoint = quinn::Endpoint::server(
            tls.server.clone(),
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
        )?;
        let addr = endpoint.local_addr()?;
        Ok((endpoint, addr))
    }

    type Handshake = Result<quinn::Connection, quinn::ConnectionError>;

    /// `client` dials `server` as peer `id`: what each side got.
    async fn handshake(
        client: &quinn::Endpoint,
        config: &quinn::ClientConfig,
        server: &quinn::Endpoint,
        id: &str,
    ) -> Result<(Handshake, Handshake), Box<dyn std::error::Error>> {
        let addr = server.local_addr()?;
        let connecting = client.connect_with(config.clone(), addr, &server_name(id))?;
        let accept = async {
            match server.accept().await {
                Some(incoming) => incoming.await,
                None => Err(quinn::ConnectionError::LocallyClosed),
            }
        };
        Ok(tokio::time::timeout(PATIENCE, async { tokio::join!(connecting, accept) }).await?)
    }

    /// A refused handshake: the server side fails, and the client side either fails or is
    /// closed by the server right after (TLS 1.3: the client finishes before the server has
    /// checked its certificate).
    async fn assert_refused((client, server): (Handshake, Handshake)) -> TestResult {
        match &server {
            Ok(_) => panic!("the server accepted"),
            Err(e) => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
        }
        if let Ok(conn) = client {
            let closed = tokio::time::timeout(PATIENCE, conn.closed()).await?;
            assert!(
                !matches!(closed, quinn::ConnectionError::LocallyClosed),
                "{closed}"
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn two_nodes_of_one_ca_read_each_others_ids() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        create_ca(&ca_dir)?;
        let a = node(&ca_dir, "a", &dir.path().join("a"))?;
        let b = node(&ca_dir, "eu-west-1", &dir.path().join("b"))?;
        let c = node(&ca_dir, "7", &dir.path().join("c"))?;
        assert_eq!((a.node_id.as_str(), b.node_id.as_str()), ("a", "eu-west-1"));
        assert_eq!(c.node_id, "7");
        let (ea, _) = endpoint(&a)?;
        let (eb, _) = endpoint(&b)?;
        let (ec, _) = endpoint(&c)?;

        // b dials a, twice: the second handshake resumes the session and still knows the ids.
        for _ in 0..2 {
            let (client, server) = handshake(&eb, &b.client, &ea, "a").await?;
            let (client, server) = (client?, server?);
            assert_eq!(peer_node_id(&client)?, "a");
            assert_eq!(peer_node_id(&server)?, "eu-west-1");
            let alpn = client
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            assert_eq!(alpn.as_deref(), Some(PEER_ALPN));
            client.close(0u32.into(), b"done");
        }
        // An all-digit id works as well (its server name is not the bare id).
        let (client, server) = handshake(&ea, &a.client, &ec, "7").await?;
        assert_eq!(peer_node_id(&client?)?, "7");
        assert_eq!(peer_node_id(&server?)?, "a");

        // Dialling a's address as if it were node 7: a's certificate does not cover that name.
        let (client, server) = handshake(&eb, &b.client, &ea, "7").await?;
        let e = client.expect_err("a is not 7");
        assert!(e.to_string().contains("not valid for name"), "{e}");
        assert!(server.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_certificate_of_another_ca_is_refused_both_ways() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (ca1, ca2) = (dir.path().join("ca1"), dir.path().join("ca2"));
        let ca1_files = create_ca(&ca1)?;
        create_ca(&ca2)?;
        let a = node(&ca1, "a", &dir.path().join("a"))?;
        // x trusts the cluster CA but its own certificate is from another CA: `load` says so.
        let x_files = create_node_cert(&ca2, "x", &[], &dir.path().join("x"))?;
        let e = PeerTls::load(&ca1_files.cert, &x_files.cert, &x_files.key)
            .expect_err("x's certificate is not from ca1");
        assert!(matches!(e, PeerTlsError::NotTrusted { .. }), "{e}");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        let x = mixed(&ca1_files.cert, &x_files)?;
        let (ea, _) = endpoint(&a)?;
        let (ex, _) = endpoint(&x)?;

        // x dials a: x accepts a's certificate, a refuses x's.
        assert_refused(handshake(&ex, &x.client, &ea, "a").await?).await?;
        // a dials x: a refuses x's certificate.
        let (client, server) = handshake(&ea, &a.client, &ex, "x").await?;
        let e = client.expect_err("a refuses x");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        assert!(server.is_err());
        Ok(())
    }

    #[test]
    fn certificates_without_one_valid_node_id_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        let ca = create_ca(&ca_dir)?;
        let sign = |uris: &[&str], name: &str| -> Result<NodeFiles, Box<dyn std::error::Error>> {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
            for uri in uris {
                params
                    .subject_alt_names
                    .push(SanType::URI((*uri).try_into()?));
            }
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &load_ca(&ca_dir)?.issuer)?;
            let out = dir.path().join(name);
            std::fs::create_dir_all(&out)?;
            let files = NodeFiles {
                cert: out.join(NODE_CERT_FILE),
                key: out.join(NODE_KEY_FILE),
                names: Vec::new(),
            };
            std::fs::write(&files.cert, cert.pem())?;
            std::fs::write(&files.key, key.serialize_pem())?;
            Ok(files)
        };
        let load = |f: &NodeFiles| PeerTls::load(&ca.cert, &f.cert, &f.key);

        let none = sign(&["https://example.com/a"], "none")?;
        let e = load(&none).expect_err("no node id");
        assert!(matches!(e, PeerTlsError::NoNodeId { .. }), "{e}");
        assert!(
            e.to_string().contains("none/node.pem carries no node id"),
            "{e}"
        );

        let two = sign(&["urn:vektagraf:node:a", "urn:vektagraf:node:b"], "two")?;
        let e = load(&two).expect_err("two node ids");
        assert!(
            e.to_string().ends_with("carries several node ids (a, b)"),
            "{e}"
        );

        let bad = sign(&["urn:vektagraf:node:A"], "bad")?;
        let e = load(&bad).expect_err("an invalid node id");
        assert!(
            matches!(e, PeerTlsError::InvalidNodeIdInCertificate { .. }),
            "{e}"
        );

        // A node id but not the host name the peers check.
        let unnamed = sign(&["urn:vektagraf:node:a"], "unnamed")?;
        let e = load(&unnamed).expect_err("not valid for a.node.vektagraf.internal");
        assert!(e.to_string().contains("not valid for name"), "{e}");

        // Someone else's key.
        let good = create_node_cert(&ca_dir, "a", &[], &dir.path().join("good"))?;
        let e = PeerTls::load(&ca.cert, &good.cert, &none.key).expect_err("wrong key");
        assert!(matches!(e, PeerTlsError::KeyMismatch { .. }), "{e}");
        Ok(())
    }

    #[test]
    fn node_ids_are_dns_labels() {
        for good in ["a", "eu-west-1", "7", "0x1", &"a".repeat(63)] {
            assert!(check_node_id(good).is_ok(), "{good}");
            assert!(ServerName::try_from(server_name(good)).is_ok(), "{good}");
        }
        for bad in ["", "A", "a_b", "a.b", "-a", "a-", "é", &"a".repeat(64)] {
            let e = check_node_id(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid node id"), "{e}");
        }
    }

    #[test]
    fn files_are_never_overwritten_and_keys_are_private() -> TestResult {
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        let ca = create_ca(&ca_dir)?;
        let e = create_ca(&ca_dir).expect_err("a second CA in the same place");
        assert!(matches!(e, PeerTlsError::AlreadyExists { .. }), "{e}");
        assert!(e.to_string().contains("ca.pem already exists"), "{e}");

        let names = ["db.example.com".to_owned(), "10.0.0.7".to_owned()];
        let out = dir.path().join("a");
        let files = create_node_cert(&ca_dir, "a", &names, &out)?;
        assert_eq!(
            files.names,
            [
                "localhost",
                "a",
                "a.node.vektagraf.internal",
                "127.0.0.1",
                "::1",
                "db.example.com",
                "10.0.0.7"
            ]
        );
        // Leaf, then the CA.
        let chain = read_certs(&files.cert)?;
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], read_certs(&ca.cert)?[0]);
        let e = create_node_cert(&ca_dir, "a", &[], &out).expect_err("again");
        assert!(matches!(e, PeerTlsError::AlreadyExists { .. }), "{e}");
        #[cfg(unix)]
        for key in [&ca.key, &files.key] {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(key)?.permissions().mode() & 0o777, 0o600);
        }

        let e = create_node_cert(&dir.path().join("nowhere"), "b", &[], &dir.path().join("b"))
            .expect_err("no CA");
        assert!(matches!(e, PeerTlsError::NoCa { .. }), "{e}");
        let e = create_node_cert(
            &ca_dir,
            "b",
            &["not a name".to_owned()],
            &dir.path().join("b"),
        )
        .expect_err("bad name");
        assert!(matches!(e, PeerTlsError::InvalidHostName { .. }), "{e}");
        assert!(
            !dir.path().join("b").exists(),
            "nothing written on a refusal"
        );
        Ok(())
    }
}
