//! TLS for both servers (`https://`, `wss://`) and for the relay's link to a `wss://` renderer.
//!
//! Everything is rustls with its `ring` provider, so no system library is needed. A server's
//! certificate sits behind [`TlsServer`], which re-reads the PEM files on SIGHUP: connections
//! already open keep the session they negotiated, new ones get the new certificate, and a
//! reload that fails (a half-written file, a key that does not match) keeps the old one.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use anyhow::{anyhow, bail, Context as _};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use crate::shutdown::Shutdown;

/// Where a bundle of CA certificates usually is on Debian and its relatives; the relay trusts
/// it for `wss://` when no `--renderer-ca` is given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A server's certificate and key, read from PEM files and replaceable while serving.
///
/// Cloning shares the certificate: a [`TlsServer::reload`] on one clone is seen by all.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
    current: Arc<CurrentCert>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.current.cert_path)
            .field("key", &self.current.key_path)
            .finish()
    }
}

/// The certificate new handshakes get, and the files it came from.
#[derive(Debug)]
struct CurrentCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.key
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

impl TlsServer {
    /// Reads the certificate chain (`cert`, leaf first) and its private key (`key`, PKCS#8,
    /// PKCS#1 or SEC1), both PEM.
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or a key that does not
    /// belong to the certificate; the message names the file.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let certified = load_certified_key(cert, key)?;
        let current = Arc::new(CurrentCert {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            key: RwLock::new(Arc::new(certified)),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("tls protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // Both servers speak HTTP/1.1 only (WebSocket upgrades need it).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServer {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
        })
    }

    /// Reads the files again and, if they hold a good certificate and key, gives it to every
    /// later handshake; open connections are untouched.
    ///
    /// # Errors
    /// As [`TlsServer::load`]; the certificate in use then stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let certified = load_certified_key(&self.current.cert_path, &self.current.key_path)?;
        *self
            .current
            .key
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// The acceptor the accept loop hands each connection to.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Takes over SIGHUP for the whole process at once, so a reload sent the moment a server
/// prints its address is never fatal (SIGHUP's default action ends the process); the binaries
/// call it before printing, [`reload_on_sighup`] then acts on the signals. Tokio keeps a
/// handler installed for the life of the process.
///
/// # Errors
/// The handler cannot be installed.
pub fn catch_sighup() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    drop(hangups);
    Ok(())
}

/// Reloads `tls` on every SIGHUP until `shutdown`, logging each outcome on one line.
///
/// # Errors
/// The SIGHUP handler cannot be installed.
pub fn reload_on_sighup(tls: TlsServer, mut shutdown: Shutdown) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                received = hangups.recv() => if received.is_none() { return },
                _ = shutdown.wait() => return,
            }
            match tls.reload() {
                Ok(()) => {
                    info!(cert = %tls.current.cert_path.display(), "tls certificate reloaded")
                }
                Err(err) => {
                    warn!(cause = %format!("{err:#}"), "tls certificate not reloaded; keeping the one in use")
                }
            }
        }
    });
    Ok(())
}

/// The crypto provider: rustls with `ring`, so nothing links a system library.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| anyhow!("{err}"))
        .with_context(|| format!("--tls-cert {}", cert.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert {}: no certificate in it", cert.display());
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| anyhow!("{err}"))
        .with_context(|| format!("--tls-key {}", key.display()))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key)
        .with_context(|| format!("--tls-key {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().with_context(|| {
        format!(
            "--tls-key {} does not belong to --tls-cert {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

/// How the relay opens connections to its renderer: plain TCP for `ws://`, TLS checked
/// against `--renderer-ca` (or the system's CA bundle) for `wss://`. Both the link and the
/// image and API requests go through it, so none travels in clear when the URL says `wss://`.
#[derive(Clone)]
pub struct Connector {
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("authority", &self.authority)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// A connector for `ws://host[:port]` or `wss://host[:port]` URLs (a path is allowed and
    /// ignored here). `ca` is a PEM file of the CA certificates to trust for `wss://`.
    ///
    /// # Errors
    /// Another scheme, no host, or a CA file that cannot be read or holds no certificate.
    pub fn for_url(url: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("renderer url {url}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            Some(other) => {
                bail!("renderer url {url}: scheme {other} is not supported, use ws:// or wss://")
            }
            None => bail!("renderer url {url}: needs ws://host:port or wss://host:port"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("renderer url {url} has no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = format!("{host}:{port}");
        if !secure {
            if let Some(ca) = ca {
                warn!(ca = %ca.display(), "--renderer-ca is unused: the renderer url is ws://, not wss://");
            }
            return Ok(Connector {
                authority,
                tls: None,
            });
        }
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = match bare_host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(bare_host.to_owned())
                .with_context(|| format!("renderer url {url}: {host} is not a valid name"))?,
        };
        let roots = root_store(ca)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("tls protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connector {
            authority,
            tls: Some((TlsConnector::from(Arc::new(config)), server_name)),
        })
    }

    /// `host:port` of the renderer, for the `Host` header of HTTP requests.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Opens a connection, and for `wss://` completes the TLS handshake, checking the
    /// renderer's certificate.
    ///
    /// # Errors
    /// TCP or TLS failure; an untrusted certificate names `--renderer-ca` in the message.
    pub async fn connect(&self) -> anyhow::Result<ClientStream> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connect to {}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, server_name)) = &self.tls else {
            return Ok(ClientStream::Plain(tcp));
        };
        let tls = connector
            .connect(server_name.clone(), tcp)
            .await
            .with_context(|| {
                format!(
                    "tls handshake with {} (is the renderer's certificate signed by --renderer-ca, for this host name?)",
                    self.authority
                )
            })?;
        Ok(ClientStream::Tls(Box::new(tls)))
    }
}

/// The CA certificates trusted for `wss://`: those in `ca`, or the system bundle.
fn root_store(ca: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let (path, flag) = match ca {
        Some(path) => (path, "--renderer-ca"),
        None => (
            Path::new(SYSTEM_CA_BUNDLE),
            "the system CA bundle (or pass --renderer-ca)",
        ),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| anyhow!("{err}"))
        .with_context(|| format!("{flag} {}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("{flag} {}: no usable CA certificate in it", path.display());
    }
    Ok(roots)
}

/// A connection to the renderer, in clear or over TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::tls::TestPki;

    fn served(tls: &TlsServer) -> Arc<CertifiedKey> {
        tls.current.key.read().unwrap().clone()
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let pki = TestPki::new("reload");
        let tls = TlsServer::load(&pki.cert, &pki.key).unwrap();
        let before = served(&tls).cert[0].clone();
        std::fs::write(&pki.cert, "-----BEGIN CERTIFICATE-----\nhalf").unwrap();
        let err = tls.reload().unwrap_err();
        assert!(format!("{err:#}").starts_with("--tls-cert"), "{err:#}");
        assert_eq!(served(&tls).cert[0], before, "still serving the old one");
        // A renewal whose key is still the old one's does not match its certificate.
        let old_key = std::fs::read(&pki.key).unwrap();
        let renewed = pki.issue();
        std::fs::write(&pki.key, old_key).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
        assert_eq!(served(&tls).cert[0], before);
        pki.issue();
        tls.reload().unwrap();
        assert_ne!(served(&tls).cert[0], before, "a good pair replaces it");
        assert_ne!(served(&tls).cert[0], renewed);
    }

    #[test]
    fn missing_or_empty_files_name_the_flag() {
        let pki = TestPki::new("missing");
        let err = TlsServer::load(&pki.dir.path().join("nope.pem"), &pki.key).unwrap_err();
        assert!(format!("{err:#}").starts_with("--tls-cert"), "{err:#}");
        std::fs::write(&pki.key, "").unwrap();
        let err = TlsServer::load(&pki.cert, &pki.key).unwrap_err();
        assert!(format!("{err:#}").starts_with("--tls-key"), "{err:#}");
    }

    #[test]
    fn the_connector_follows_the_url_scheme() {
        let plain = Connector::for_url("ws://127.0.0.1:5000", None).unwrap();
        assert_eq!(plain.authority(), "127.0.0.1:5000");
        assert!(plain.tls.is_none());
        let pki = TestPki::new("connector");
        let secure = Connector::for_url("wss://renderer.internal/", Some(&pki.ca)).unwrap();
        assert_eq!(secure.authority(), "renderer.internal:443");
        assert!(secure.tls.is_some());
        let ip6 = Connector::for_url("wss://[::1]:5001", Some(&pki.ca)).unwrap();
        assert_eq!(ip6.authority(), "[::1]:5001");
        for bad in ["http://127.0.0.1:5000", "127.0.0.1:5000", "ws://"] {
            assert!(Connector::for_url(bad, None).is_err(), "{bad}");
        }
        let err = Connector::for_url("wss://x:1", Some(&pki.key)).unwrap_err();
        assert!(format!("{err:#}").contains("--renderer-ca"), "{err:#}");
    }
}
