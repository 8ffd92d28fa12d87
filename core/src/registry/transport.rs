//! HTTP/1.1 to a registry endpoint, over TCP or TLS (rustls: the system's
//! CAs plus the endpoint's, client certificates, or no verification where
//! hosts.toml says `skip_verify`). Redirects are followed; a request whose
//! body the registry stops taking, or that gets no response, and a response
//! body that sends no byte, fail after the stall timeout naming what it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::hosts::Endpoint;
use crate::error::{Error, Result};

/// Where Debian keeps the system's trusted CAs.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
const MAX_REDIRECTS: usize = 5;

/// What a request sends: bytes in memory, or a file streamed from disk
/// (blobs being pushed), read afresh for every attempt.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Bytes (empty for none).
    Bytes(Bytes),
    /// The whole of a file.
    File(Arc<std::fs::File>, u64),
}

impl Payload {
    /// No body.
    pub fn empty() -> Self {
        Self::Bytes(Bytes::new())
    }

    fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::File(_, size) => *size,
        }
    }

    /// The body; `activity` is touched each time the connection takes the
    /// next chunk of a file.
    fn body(&self, activity: Arc<Activity>) -> BoxBody<Bytes, std::io::Error> {
        match self {
            Self::Bytes(bytes) => Full::new(bytes.clone()).map_err(|never| match never {}).boxed(),
            Self::File(file, size) => {
                let (file, size) = (Arc::clone(file), *size);
                let chunks = futures_util::stream::unfold(0u64, move |offset| {
                    let file = Arc::clone(&file);
                    activity.touch();
                    async move {
                        if offset >= size {
                            return None;
                        }
                        let want = (size - offset).min(FILE_CHUNK as u64) as usize;
                        let read = tokio::task::spawn_blocking(move || {
                            let mut buffer = vec![0u8; want];
                            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buffer, offset).map(|()| buffer)
                        })
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r);
                        Some(match read {
                            Ok(buffer) => (Ok(http_body::Frame::data(Bytes::from(buffer))), offset + want as u64),
                            Err(e) => (Err(e), size),
                        })
                    }
                });
                StreamBody::new(chunks).boxed()
            }
        }
    }
}

/// Bytes read from a file per body frame.
const FILE_CHUNK: usize = 1 << 20;

/// When a request last made progress (its body's last chunk was taken):
/// a request is stalled once it has made none for the stall timeout.
#[derive(Debug)]
struct Activity {
    since: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long since the last progress.
    fn idle(&self) -> Duration {
        self.since
            .elapsed()
            .saturating_sub(Duration::from_nanos(self.last.load(Ordering::Relaxed)))
    }
}

/// A connection's stream, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How to reach one endpoint: its TLS settings, built once.
#[derive(Clone)]
pub struct Connector {
    endpoint: Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
    connect_timeout: Duration,
    stall_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("endpoint", &self.endpoint).finish()
    }
}

impl Connector {
    /// A connector for `endpoint`; fails naming a CA or client file that
    /// cannot be read.
    pub fn new(endpoint: Endpoint, connect_timeout: Duration, stall_timeout: Duration) -> Result<Self> {
        let tls = (endpoint.scheme == "https")
            .then(|| tls_config(&endpoint).map(|c| tokio_rustls::TlsConnector::from(Arc::new(c))))
            .transpose()?;
        Ok(Self {
            endpoint,
            tls,
            connect_timeout,
            stall_timeout,
        })
    }

    /// The endpoint this reaches.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// How long a body may send nothing.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    /// `scheme://host` + `path` (which starts with '/').
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}{}{}",
            self.endpoint.scheme, self.endpoint.host, self.endpoint.path, path
        )
    }

    /// Sends one request to `url`, following redirects (dropping
    /// `Authorization` when the host changes); the response's body is left
    /// to the caller.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        body: Payload,
    ) -> Result<Response<Incoming>> {
        let mut url = url.to_string();
        let mut headers = headers.clone();
        for (name, value) in &self.endpoint.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_once(method.clone(), &url, &headers, body.clone()).await?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Error::unavailable(format!("{url}: a redirect without a Location")))?;
            let next = resolve_location(&url, location);
            if host_of(&next) != host_of(&url) {
                headers.remove(http::header::AUTHORIZATION);
            }
            url = next;
        }
        Err(Error::unavailable(format!(
            "{url}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        body: Payload,
    ) -> Result<Response<Incoming>> {
        let (scheme, host, path) =
            split_url(url).ok_or_else(|| Error::invalid_argument(format!("{url:?} is not a URL")))?;
        let default_port = if scheme == "https" { 443 } else { 80 };
        let address = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            host.to_string()
        } else {
            format!("{host}:{default_port}")
        };
        let unreachable = |e: &dyn std::fmt::Display| Error::unavailable(format!("connecting to {host}: {e}"));
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(&address))
            .await
            .map_err(|_| unreachable(&"timed out"))?
            .map_err(|e| unreachable(&e))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if scheme == "https" {
            let tls = match &self.tls {
                Some(tls) => tls.clone(),
                None => tokio_rustls::TlsConnector::from(Arc::new(tls_config(&self.endpoint)?)),
            };
            let name = host_name(host);
            let server = ServerName::try_from(name.to_string())
                .map_err(|e| Error::invalid_argument(format!("host {name:?}: {e}")))?;
            let stream = tokio::time::timeout(self.connect_timeout, tls.connect(server, tcp))
                .await
                .map_err(|_| unreachable(&"TLS handshake timed out"))?
                .map_err(|e| unreachable(&e))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let activity = Arc::new(Activity::new());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(body.body(Arc::clone(&activity)))
            .map_err(|e| Error::invalid_argument(format!("{url}: {e}")))?;
        *request.headers_mut() = headers.clone();
        if body.len() > 0 || matches!(request.method(), &Method::PUT | &Method::POST | &Method::PATCH) {
            request
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        request.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_str(host).map_err(|e| unreachable(&e))?,
        );
        request.headers_mut().insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"))),
        );
        // Stalled: the body's next chunk not taken (the registry stopped
        // reading), or no response, for the stall timeout.
        let sending = sender.send_request(request);
        tokio::pin!(sending);
        loop {
            let idle = activity.idle();
            if idle >= self.stall_timeout {
                return Err(Error::unavailable(format!(
                    "{url}: no progress for {:?}, the transfer stalled",
                    self.stall_timeout
                )));
            }
            if let Ok(response) = tokio::time::timeout(self.stall_timeout - idle, &mut sending).await {
                return response.map_err(|e| Error::unavailable(format!("{url}: {e}")));
            }
        }
    }
}

/// Reads a whole body of at most `limit` bytes; more is refused naming `what`.
pub async fn read_body(body: Incoming, limit: usize, stall: Duration, what: &str) -> Result<Bytes> {
    let mut body = body;
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(&mut body, stall, what).await? {
        if out.len() + chunk.len() > limit {
            return Err(Error::invalid_argument(format!("{what} is larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// The next data of a body; None at its end. A body that sends nothing for
/// `stall` fails as Unavailable naming `what`.
pub async fn next_chunk(body: &mut Incoming, stall: Duration, what: &str) -> Result<Option<Bytes>> {
    loop {
        let frame = tokio::time::timeout(stall, body.frame())
            .await
            .map_err(|_| Error::unavailable(format!("{what}: no data for {stall:?}, the transfer stalled")))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(Error::unavailable(format!("{what}: {e}"))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

fn tls_config(endpoint: &Endpoint) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS: {e}")))?;
    let builder = if endpoint.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE").map_or_else(|| SYSTEM_CAS.into(), std::path::PathBuf::from);
        if let Ok(certs) = CertificateDer::pem_file_iter(&system) {
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
        }
        for ca in &endpoint.ca {
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| Error::invalid_argument(format!("CA file {}: {e}", ca.display())))?;
            let mut added = 0;
            for cert in certs {
                let cert = cert.map_err(|e| Error::invalid_argument(format!("CA file {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::invalid_argument(format!("CA file {}: {e}", ca.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(Error::invalid_argument(format!(
                    "CA file {}: no certificate",
                    ca.display()
                )));
            }
        }
        builder.with_root_certificates(roots)
    };
    match endpoint.client.first() {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let key_file = key.as_ref().unwrap_or(cert);
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::invalid_argument(format!("client certificate {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| Error::invalid_argument(format!("client key {}: {e}", key_file.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::invalid_argument(format!("client certificate {}: {e}", cert.display())))
        }
    }
}

/// `skip_verify`: any certificate is accepted (signatures still checked,
/// so the handshake itself is sound).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `(scheme, host, path-and-query)` of an absolute http(s) URL.
pub fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!host.is_empty()).then_some((scheme, host, path))
}

fn host_of(url: &str) -> Option<&str> {
    split_url(url).map(|(_, host, _)| host)
}

/// The host name without a port (or an IPv6 address without brackets).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    }
}

/// A Location header's target, absolute or relative to `base`.
pub fn resolve_location(base: &str, location: &str) -> String {
    if split_url(location).is_some() {
        return location.to_string();
    }
    let (scheme, host, _) = split_url(base).unwrap_or(("https", "", "/"));
    if location.starts_with('/') {
        format!("{scheme}://{host}{location}")
    } else {
        let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
        format!("{dir}/{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_locations_resolve() {
        assert_eq!(
            split_url("http://127.0.0.1:5000/v2/x"),
            Some(("http", "127.0.0.1:5000", "/v2/x"))
        );
        assert_eq!(split_url("ftp://x/"), None);
        assert_eq!(resolve_location("https://a/v2/x/blobs/d", "/s/1"), "https://a/s/1");
        assert_eq!(resolve_location("https://a/v2/x", "https://b/y"), "https://b/y");
        assert_eq!(host_name("[::1]:5000"), "::1");
        assert_eq!(host_name("reg.example:443"), "reg.example");
    }

    #[tokio::test]
    async fn an_upload_the_registry_stops_reading_fails_after_the_stall_timeout() {
        // A registry that accepts the connection and never reads from it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("blob"))
            .unwrap();
        // Far more than the socket buffers take; sparse, so cheap.
        file.set_len(256 << 20).unwrap();
        let endpoint = Endpoint {
            scheme: "http".into(),
            host: address.to_string(),
            path: "/v2".into(),
            capabilities: super::super::hosts::Capabilities::ALL,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
        };
        let connector = Connector::new(endpoint, Duration::from_secs(5), Duration::from_secs(1)).unwrap();
        let started = Instant::now();
        let e = connector
            .send(
                Method::PUT,
                &connector.url("/x/blobs/uploads/1"),
                &HeaderMap::new(),
                Payload::File(Arc::new(file), 256 << 20),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("stalled"), "{e}");
        // One stall timeout after the buffers filled, not a second per MiB.
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        drop(held.join());
    }
}
