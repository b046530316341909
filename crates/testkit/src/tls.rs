//! A throwaway certificate authority for the TLS tests, and clients that trust it.
//!
//! Each [`TestPki`] makes its own CA with `rcgen` and a server certificate for `localhost`
//! and `127.0.0.1` signed by it, written as PEM files into a temporary folder, so the servers
//! read them exactly as they read an operator's files.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::TempDir;

/// A CA and one server certificate it signed, as PEM files.
pub struct TestPki {
    /// Holds the files; removed on drop.
    pub dir: TempDir,
    /// The CA certificate (`--renderer-ca`, or what a client trusts).
    pub ca: PathBuf,
    /// The server's certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// The server's private key (`--tls-key`).
    pub key: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl TestPki {
    /// A new CA named `label`, with a server certificate for `localhost` and `127.0.0.1`.
    ///
    /// # Panics
    /// If a certificate cannot be made or written: the test fails.
    pub fn new(label: &str) -> Self {
        let dir = TempDir::new(&format!("pki-{label}"));
        let ca_key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("heatmap test CA {label}"));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = params.self_signed(&ca_key).expect("self-sign the ca");
        let pki = TestPki {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            dir,
            ca_cert,
            ca_key,
        };
        std::fs::write(&pki.ca, pki.ca_cert.pem()).expect("write ca.pem");
        pki.issue();
        pki
    }

    /// Writes a fresh server certificate and key over `cert` and `key` (a renewal), and
    /// returns the certificate, to tell it from the one before.
    ///
    /// # Panics
    /// If the certificate cannot be made or written.
    pub fn issue(&self) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign the server certificate");
        std::fs::write(&self.cert, cert.pem()).expect("write cert.pem");
        std::fs::write(&self.key, key.serialize_pem()).expect("write key.pem");
        cert.der().clone()
    }

    /// A client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_cert.der().clone())
            .expect("add the test ca");
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A TCP connection to `addr` from the local address `source` (any of 127.0.0.0/8 works on
/// Linux loopback), so one test can be many distinct visitors.
///
/// # Errors
/// The bind or the connect fails.
pub async fn connect_from(source: Option<IpAddr>, addr: &str) -> anyhow::Result<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().context("a socket address")?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .with_context(|| format!("bind {source}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Completes a TLS handshake on `stream` for `host`, trusting what `config` trusts.
///
/// # Errors
/// The handshake fails, e.g. on an untrusted certificate.
pub async fn handshake(
    stream: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_owned()).context("server name")?,
    };
    let stream = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .context("tls handshake")?;
    Ok(stream)
}

/// The certificate a TLS server at `addr` presents to a client trusting `config`.
///
/// # Errors
/// Connection or handshake failure.
pub async fn peer_certificate(
    addr: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<CertificateDer<'static>> {
    let stream = connect_from(None, addr).await?;
    let name = ServerName::IpAddress(
        addr.parse::<std::net::SocketAddr>()
            .context("a socket address")?
            .ip()
            .into(),
    );
    let stream = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .context("tls handshake")?;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.clone().into_owned())
        .context("no certificate presented")
}
