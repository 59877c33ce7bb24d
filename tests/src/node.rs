//! A launcher for real nodes on loopback (port 0), sharing one TLS certificate and one admin
//! token so a client can talk to several of them, and stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use edge_config::{NodeConfig, TlsFiles};
use vektagraf::server::{tls, Node};
use vektagraf_client::{Client, ClientConfig, Endpoint, Strategy};

/// What every node of a test cluster shares.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub tls: TlsFiles,
    pub ca: PathBuf,
    pub admin_token: String,
    token_file: PathBuf,
}

impl Cluster {
    /// A development CA and an admin token, made by a first node that is then stopped.
    pub async fn new() -> Result<Cluster> {
        let root = tempfile::tempdir()?;
        let seed_dir = root.path().join("seed");
        let tls = tls::ensure_dev_certificate(&seed_dir, &[])?;
        let token_file = root.path().join("admin.token");
        let token = {
            let db = vektagraf::Database::open(&seed_dir, vektagraf::DatabaseConfig::default())?;
            let t = db.tokens().create("admin", vektagraf::model::Role::Admin)?;
            db.close()?;
            t.token
        };
        std::fs::write(&token_file, &token)?;
        Ok(Cluster {
            ca: tls::dev_ca_path(&seed_dir),
            tls,
            admin_token: token,
            token_file,
            root,
        })
    }

    /// A node config in `<root>/<name>` on loopback ports chosen by the OS.
    pub fn config(&self, name: &str) -> NodeConfig {
        let mut c = NodeConfig {
            data_dir: self.root.path().join(name),
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: Some(self.tls.clone()),
            admin_token_file: Some(self.token_file.clone()),
            ..NodeConfig::default()
        };
        c.limits.shutdown_grace = Duration::from_secs(5);
        c
    }

    pub async fn start(&self, config: NodeConfig) -> Result<Node> {
        Ok(Node::start(config).await?)
    }

    /// A client for these nodes with the admin token (short timeouts, fast health checks).
    pub fn client_config(&self, nodes: &[SocketAddr], strategy: Strategy) -> Result<ClientConfig> {
        let mut c = ClientConfig::new(
            nodes.iter().map(|a| Endpoint::new(a.to_string())).collect(),
            vektagraf_client::read_ca_file(&self.ca)?,
        );
        c.token = self.admin_token.clone();
        c.strategy = strategy;
        c.request_timeout = Duration::from_secs(20);
        c.connect_timeout = Duration::from_secs(2);
        c.health_interval = Duration::from_millis(100);
        c.breaker.reset_timeout = Duration::from_millis(300);
        c.breaker.failure_threshold = 2;
        Ok(c)
    }

    pub async fn client(&self, nodes: &[SocketAddr]) -> Result<Client> {
        Ok(Client::connect(self.client_config(nodes, Strategy::RoundRobin)?).await?)
    }
}

/// `GET path` over plain HTTP/1.1; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_request(addr, "GET", path, None, "").await
}

/// `method path` with a JSON body (none for `null`) and the API token `token` (the `api-key`
/// header) over plain HTTP/1.1; returns the status code and the body parsed as JSON.
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value)> {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = http_request(addr, method, path, token, &body).await?;
    let json = serde_json::from_str(&text)
        .with_context(|| format!("{method} {path} answered {status} with `{text}`"))?;
    Ok((status, json))
}

/// `method path` over plain HTTP/1.1 with `body` (none when empty) and, if given, the token
/// in the `api-key` header; returns the status code and the body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        request.push_str(&format!("api-key: {t}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .context("HTTP response timed out")??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size")?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("chunk body")?);
        body = rest.get(n + 2..).context("chunk end")?;
    }
}

/// A bare QUIC connection to a node (no client crate), for tests that send raw bytes.
pub async fn raw_connect(
    addr: SocketAddr,
    ca: &Path,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![vektagraf_proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(addr, "localhost")?.await?;
    Ok((endpoint, conn))
}

/// Sends `bytes` on a new stream (finishing it when `finish`) and decodes the node's answer.
pub async fn raw_request(
    conn: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
) -> Result<vektagraf_proto::Response> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(bytes).await?;
    if finish {
        send.finish()?;
    }
    let raw = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(64 << 20))
        .await
        .context("no answer within 10 s")??;
    let header: [u8; 5] = raw
        .get(..5)
        .and_then(|h| h.try_into().ok())
        .context("answer shorter than a frame header")?;
    let len = vektagraf_proto::frame::parse_header(header, 64 << 20)?;
    anyhow::ensure!(
        raw.len() == 5 + len,
        "answer is {} bytes, its header says {}",
        raw.len(),
        5 + len
    );
    Ok(vektagraf_proto::decode_response(&raw[5..])?)
}
