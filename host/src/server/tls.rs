//! TLS for the node: the configured certificate, or a development CA made on first start
//! (`data_dir/tls/ca.pem` is what clients trust; the CA key stays beside it, mode 0600).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use edge_config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ServeError;

/// Where the development CA and certificate live inside the data directory.
pub fn dev_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The CA file a client passes as `--ca` for a node with a development certificate.
pub fn dev_ca_path(data_dir: &Path) -> PathBuf {
    dev_dir(data_dir).join("ca.pem")
}

fn tls_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> ServeError {
    let what = what.into();
    move |e| ServeError::Tls(format!("{what}: {e}"))
}

pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| ServeError::io(format!("writing {}", path.display()), e))?;
    f.write_all(bytes)
        .map_err(|e| ServeError::io(format!("writing {}", path.display()), e))
}

/// Creates the development CA and a certificate for `localhost`, `127.0.0.1` and `::1` (plus
/// `extra_names`) if they are not there yet; returns the certificate and key files.
pub fn ensure_dev_certificate(
    data_dir: &Path,
    extra_names: &[String],
) -> Result<TlsFiles, ServeError> {
    let dir = dev_dir(data_dir);
    let files = TlsFiles {
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    };
    if files.cert.exists() && files.key.exists() && dev_ca_path(data_dir).exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| ServeError::io(format!("creating {}", dir.display()), e))?;
    let ca_key = rcgen::KeyPair::generate().map_err(tls_err("generating the CA key"))?;
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA parameters"))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Vektagraf development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(tls_err("signing the CA"))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra_names.iter().cloned());
    let node_key = rcgen::KeyPair::generate().map_err(tls_err("generating the node key"))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(tls_err("node certificate names"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vektagraf node");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params
        .signed_by(&node_key, &issuer)
        .map_err(tls_err("signing the node certificate"))?;
    write_private(&dir.join("ca.key"), issuer.key().serialize_pem().as_bytes())?;
    write_private(&files.key, node_key.serialize_pem().as_bytes())?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text)
            .map_err(|e| ServeError::io(format!("writing {}", path.display()), e))
    };
    write(&files.cert, cert.pem() + &ca_cert.pem())?;
    write(&dev_ca_path(data_dir), ca_cert.pem())?;
    Ok(files)
}

/// The rustls provider: ring (pure Rust + asm, no cmake), the same on node and client.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC server configuration from PEM files, offering `vektagraf/1`.
pub fn server_crypto(
    files: &TlsFiles,
) -> Result<quinn::crypto::rustls::QuicServerConfig, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ServeError::Tls(format!("reading {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{} holds no certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServeError::Tls(format!("reading {}: {e}", files.key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![vektagraf_proto::ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| ServeError::Tls(format!("QUIC needs TLS 1.3 with AES-128-GCM: {e}")))
}
