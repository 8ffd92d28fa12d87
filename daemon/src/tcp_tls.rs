//! The API over TCP: `[grpc] tcp_address`, with TLS from `tcp_tls_cert`
//! and `tcp_tls_key` (TLS 1.2 and 1.3, rustls), a client certificate
//! signed by `tcp_tls_ca` required when a CA is configured, plain TCP only
//! with `tcp_insecure = true`.
//!
//! The TLS configuration is held behind a lock rather than given to the
//! HTTP/2 server, so that SIGHUP can load the files again: connections
//! accepted afterwards get the new certificates, while those already open
//! keep the session they made.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use berth_core::shutdown::ShutdownSignal;
use berth_core::{Error, Result};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::connection_limit::{ConnectionLimit, Counted};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The TLS files of `[grpc]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA for client certificates (mutual TLS), if any.
    pub ca: Option<PathBuf>,
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// The current TLS configuration, which SIGHUP replaces.
pub struct ReloadableTls {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl ReloadableTls {
    /// Loads the files; the error names the one at fault.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let acceptor = TlsAcceptor::from(server_config(&files)?);
        Ok(Self {
            files,
            acceptor: RwLock::new(acceptor),
        })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.ca.is_some()
    }

    /// Loads the files again; on an error the configuration in use stays.
    pub fn reload(&self) -> Result<()> {
        let acceptor = TlsAcceptor::from(server_config(&self.files)?);
        *self.acceptor.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = acceptor;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A rustls server configuration from the files.
fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certificates("grpc.tcp_tls_cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::invalid_argument(format!("grpc.tcp_tls_key {}: {e}", files.key.display())))?;
    let certified = rustls::sign::CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => "the key is not the certificate's".to_string(),
            other => other.to_string(),
        };
        Error::invalid_argument(format!(
            "grpc.tcp_tls_key {} does not go with grpc.tcp_tls_cert {}: {why}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?;
    let builder = match &files.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates("grpc.tcp_tls_ca", ca)? {
                roots
                    .add(certificate)
                    .map_err(|e| Error::invalid_argument(format!("grpc.tcp_tls_ca {}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::invalid_argument(format!("grpc.tcp_tls_ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(Arc::new(certified))));
    // gRPC clients insist on HTTP/2 being negotiated.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file (the setting `field` names); at least
/// one.
fn read_certificates(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let field = |what: &str| format!("{field} {}: {what}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::invalid_argument(field(&e.to_string())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid_argument(field(&e.to_string())))?;
    if certificates.is_empty() {
        return Err(Error::invalid_argument(field("no PEM certificate in it")));
    }
    Ok(certificates)
}

/// Binds a TCP listener on the address of setting `field` (the API's or
/// the metrics'); the error names both.
pub async fn bind(field: &str, address: &str) -> Result<TcpListener> {
    let address: SocketAddr = address
        .parse()
        .map_err(|_| Error::invalid_argument(format!("{field} {address:?} is not an address and port")))?;
    TcpListener::bind(address)
        .await
        .map_err(|e| Error::io(format!("listening on {address} ({field})"), &e))
}

/// Accepts connections until shutdown; each TLS handshake runs on its own
/// so a slow client never holds up the others. Connections come out of
/// the returned stream ready for the HTTP/2 server.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    limit: ConnectionLimit,
    shutdown: ShutdownSignal,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TcpConnection>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.fired() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Counted before the handshake, which holds a descriptor too.
            let Some(stream) = limit.admit(stream) else { continue };
            let sender = sender.clone();
            match &tls {
                None => {
                    if sender.send(Ok(TcpConnection::Plain(stream))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let _ = sender.send(Ok(TcpConnection::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// An accepted TCP connection, in TLS or (when configured) plain.
pub enum TcpConnection {
    /// `tcp_insecure = true`.
    Plain(Counted<TcpStream>),
    /// After a completed handshake.
    Tls(Box<TlsStream<Counted<TcpStream>>>),
}

impl Connected for TcpConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Plain(stream) => stream.connect_info(),
            Self::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for TcpConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
