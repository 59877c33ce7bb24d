//! TLS for QUIC: TLS 1.3 only, the nodes' CA as the only trust anchor, ALPN `vektagraf/1`,
//! session resumption on (rustls' in-memory ticket cache).
//!
//! The certificate verifier counts the certificates it verifies: a resumed handshake (TLS 1.3
//! PSK from a session ticket) verifies none, which is how [`Client::handshake`] tells a
//! resumed handshake from a full one. rustls only resumes a session with the same verifier
//! (and client-auth resolver) object that stored it, so every configuration derived here is a
//! clone of one base configuration.
//!
//! [`Client::handshake`]: crate::Client::handshake

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::ClientError;

/// The TLS side of a client.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    /// The configuration every pooled connection uses (resumption on).
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// The same without resumption: always a full handshake.
    pub(crate) fresh: Arc<rustls::ClientConfig>,
    pub(crate) verifier: Arc<CountingVerifier>,
}

impl Tls {
    pub(crate) fn new(ca_pem: &[u8]) -> Result<Self, ClientError> {
        let config_error = |m: String| ClientError::Config(m);
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| config_error(format!("CA certificate: bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| config_error(format!("CA certificate rejected: {e}")))?;
        }
        if roots.is_empty() {
            return Err(config_error(
                "CA certificate: no certificate in the PEM data (expected a \
                 `-----BEGIN CERTIFICATE-----` block)"
                    .into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| config_error(format!("CA certificate: {e}")))?;
        let verifier = Arc::new(CountingVerifier {
            inner: webpki,
            verified: AtomicU64::new(0),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config_error(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![vektagraf_proto::ALPN.to_vec()];
        // The default, stated: an in-memory cache of tickets for 256 server names.
        config.resumption = Resumption::in_memory_sessions(256);
        let mut fresh = config.clone();
        fresh.resumption = Resumption::disabled();
        Ok(Self {
            config: Arc::new(config),
            fresh: Arc::new(fresh),
            verifier,
        })
    }
}

/// The CA's WebPKI verifier, counting the certificates it verifies.
#[derive(Debug)]
pub(crate) struct CountingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verified: AtomicU64,
}

impl CountingVerifier {
    /// Server certificates verified so far (full handshakes).
    pub(crate) fn verified(&self) -> u64 {
        self.verified.load(Ordering::SeqCst)
    }
}

impl ServerCertVerifier for CountingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verified.fetch_add(1, Ordering::SeqCst);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_without_certificates_is_refused_in_words() {
        let e = Tls::new(b"not a pem file").expect_err("no certificate");
        assert_eq!(
            e.to_string(),
            "CA certificate: no certificate in the PEM data (expected a \
             `-----BEGIN CERTIFICATE-----` block)"
        );
        let e = Tls::new(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .expect_err("bad base64");
        assert!(
            e.to_string().starts_with("CA certificate: bad PEM: "),
            "{e}"
        );
    }
}
