//! One repository at a registry, through its endpoints in order: resolve a
//! tag or digest to a descriptor, fetch manifests (size-capped, verified)
//! and open blob bodies (from an offset, to resume). Transient failures
//! (connection errors, 5xx, 429) are retried with backoff; a 401 is
//! answered through the [`Authorizer`] once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::types::Descriptor;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

use super::auth::Authorizer;
use super::hosts::{self, Endpoint};
use super::reference::Reference;
use super::transport::{Connector, Payload, next_chunk, read_body, resolve_location};
use crate::content::Digest;
use crate::error::{Error, ErrorKind, Result};

/// The manifest media types asked for, most specific first.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The daemon's registry settings (`[registry]` in its config).
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// The hosts.toml directories' root.
    pub config_path: PathBuf,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a transfer may send nothing before it fails.
    pub stall_timeout: Duration,
    /// The largest manifest, index or config accepted.
    pub max_manifest_size: usize,
    /// Attempts for a transient failure.
    pub attempts: u32,
    /// Blobs downloaded at once by one pull.
    pub max_concurrent_downloads: usize,
    /// A docker-style config.json with credentials per host.
    pub docker_config: Option<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            config_path: PathBuf::from("/etc/berth/certs.d"),
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            max_manifest_size: 4 << 20,
            attempts: 4,
            max_concurrent_downloads: 3,
            docker_config: None,
        }
    }
}

/// A repository and the endpoints that serve it.
#[derive(Debug)]
pub struct Repository {
    reference: Reference,
    connectors: Vec<Connector>,
    auth: Arc<Authorizer>,
    headers: HeaderMap,
    config: RegistryConfig,
}

/// A blob's body, read chunk by chunk.
#[derive(Debug)]
pub struct BlobBody {
    body: Incoming,
    stall: Duration,
    what: String,
    /// Where the body starts in the blob (0 when the server ignored a range).
    pub offset: u64,
}

impl BlobBody {
    /// The next bytes; None at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        next_chunk(&mut self.body, self.stall, &self.what).await
    }
}

/// What a request is for: picks the endpoints and the auth scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Resolve,
    Pull,
}

impl Repository {
    /// The endpoints for `reference`'s host (hosts.toml or defaults).
    /// `default_scheme` and `headers` come from the request's resolver.
    pub fn open(
        config: &RegistryConfig,
        reference: &Reference,
        default_scheme: &str,
        headers: &[(String, String)],
        auth: Arc<Authorizer>,
    ) -> Result<Self> {
        let endpoints = hosts::endpoints(&config.config_path, &reference.host, default_scheme)?;
        let connectors = endpoints
            .into_iter()
            .map(|e: Endpoint| Connector::new(e, config.connect_timeout, config.stall_timeout))
            .collect::<Result<Vec<_>>>()?;
        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::invalid_argument(format!("resolver header {name:?} is not valid")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::invalid_argument(format!("resolver header {name}: the value is not valid")))?;
            header_map.append(name, value);
        }
        Ok(Self {
            reference: reference.clone(),
            connectors,
            auth,
            headers: header_map,
            config: config.clone(),
        })
    }

    /// The reference this serves.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The tag or digest as a descriptor of the root manifest or index,
    /// with its verified bytes.
    pub async fn resolve(&self) -> Result<(Descriptor, Bytes)> {
        let object = self.reference.object();
        let path = format!("/{}/manifests/{object}", self.reference.repository);
        let response = self
            .request(Purpose::Resolve, Method::GET, &path, manifest_accept(), None)
            .await?;
        let media_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let what = format!("manifest of {}", self.reference);
        let body = read_body(
            response.into_body(),
            self.config.max_manifest_size,
            self.config.stall_timeout,
            &what,
        )
        .await
        .map_err(|e| e.with_context(&self.reference))?;
        let computed = Digest::of(&body);
        if let Some(want) = &self.reference.digest
            && *want != computed
        {
            return Err(Error::failed_precondition(format!(
                "{}: the registry served a manifest of digest {computed}",
                self.reference
            )));
        }
        if let Some(header) = header_digest
            && header != computed.to_string()
        {
            return Err(Error::failed_precondition(format!(
                "{}: the registry says the manifest is {header}, its bytes are {computed}",
                self.reference
            )));
        }
        let media_type = if media_type.is_empty() || !MANIFEST_TYPES.contains(&media_type.as_str()) {
            sniff_media_type(&body).unwrap_or(media_type)
        } else {
            media_type
        };
        let desc = Descriptor {
            media_type,
            digest: computed.to_string(),
            size: body.len() as i64,
            annotations: Default::default(),
        };
        Ok((desc, body))
    }

    /// A manifest, index or config's bytes, verified against `desc`.
    pub async fn fetch_small(&self, desc: &Descriptor) -> Result<Bytes> {
        let digest = Digest::parse(&desc.digest)?;
        if desc.size < 0 || desc.size as u64 > self.config.max_manifest_size as u64 {
            return Err(Error::invalid_argument(format!(
                "{} {}: {} bytes is over the limit of {}",
                desc.media_type, desc.digest, desc.size, self.config.max_manifest_size
            )));
        }
        let is_manifest = MANIFEST_TYPES.contains(&desc.media_type.as_str());
        let path = if is_manifest {
            format!("/{}/manifests/{digest}", self.reference.repository)
        } else {
            format!("/{}/blobs/{digest}", self.reference.repository)
        };
        let accept = if is_manifest {
            manifest_accept()
        } else {
            HeaderMap::new()
        };
        let response = self.request(Purpose::Pull, Method::GET, &path, accept, None).await?;
        let body = read_body(
            response.into_body(),
            self.config.max_manifest_size,
            self.config.stall_timeout,
            &format!("{} {digest}", desc.media_type),
        )
        .await?;
        let computed = Digest::of(&body);
        if computed != digest || body.len() as i64 != desc.size {
            return Err(Error::failed_precondition(format!(
                "{digest} from {}: the registry served {} bytes of digest {computed}",
                self.reference,
                body.len()
            )));
        }
        Ok(body)
    }

    /// Opens the body of blob `digest` from `offset` (a range request; the
    /// body says where it really starts).
    pub async fn open_blob(&self, digest: &Digest, offset: u64) -> Result<BlobBody> {
        let path = format!("/{}/blobs/{digest}", self.reference.repository);
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let response = self
            .request(Purpose::Pull, Method::GET, &path, HeaderMap::new(), range)
            .await?;
        let start = if response.status() == StatusCode::PARTIAL_CONTENT {
            offset
        } else {
            0
        };
        Ok(BlobBody {
            body: response.into_body(),
            stall: self.config.stall_timeout,
            what: format!("blob {digest} from {}", self.reference),
            offset: start,
        })
    }

    /// The endpoint pushes go to: the first that may push.
    fn push_connector(&self) -> Result<&Connector> {
        self.connectors
            .iter()
            .find(|c| c.endpoint().capabilities.push)
            .ok_or_else(|| Error::failed_precondition(format!("{}: no registry endpoint may push", self.reference)))
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.reference.repository)
    }

    /// Sends one push request to the push endpoint (`path` below its API
    /// root, or an absolute URL the registry gave).
    async fn push_request(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Payload,
    ) -> Result<Response<Incoming>> {
        let connector = self.push_connector()?;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            connector.url(path)
        };
        let mut headers = headers;
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        self.request_at(connector, &method, &url, &headers, &self.push_scope(), body)
            .await
    }

    /// Whether the push endpoint has blob `digest` in this repository.
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool> {
        let path = format!("/{}/blobs/{digest}", self.reference.repository);
        match self
            .push_request(Method::HEAD, &path, HeaderMap::new(), Payload::empty())
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads blob `digest` (`body`), first asking the registry to mount
    /// it from repository `mount_from` of the same registry where given.
    /// Returns whether it was mounted rather than sent.
    pub async fn upload_blob(&self, digest: &Digest, body: Payload, mount_from: Option<&str>) -> Result<bool> {
        let repository = &self.reference.repository;
        let start = match mount_from {
            Some(from) => format!("/{repository}/blobs/uploads/?mount={digest}&from={from}"),
            None => format!("/{repository}/blobs/uploads/"),
        };
        let response = self
            .push_request(Method::POST, &start, HeaderMap::new(), Payload::empty())
            .await?;
        if response.status() == StatusCode::CREATED && mount_from.is_some() {
            return Ok(true);
        }
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| Error::unavailable(format!("{}: the upload of {digest} got no Location", self.reference)))?
            .to_string();
        let base = self.push_connector()?.url(&start);
        let mut url = resolve_location(&base, &location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let response = self.push_request(Method::PUT, &url, headers, body).await?;
        if let Some(stored) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && stored != digest.to_string()
        {
            return Err(Error::failed_precondition(format!(
                "{}: the registry stored {stored} for blob {digest}",
                self.reference
            )));
        }
        Ok(false)
    }

    /// Puts a manifest or index under `object` (a tag or its digest).
    pub async fn put_manifest(&self, object: &str, media_type: &str, bytes: Bytes) -> Result<()> {
        let path = format!("/{}/manifests/{object}", self.reference.repository);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| Error::invalid_argument(format!("media type {media_type:?} is not a header value")))?,
        );
        self.push_request(Method::PUT, &path, headers, Payload::Bytes(bytes))
            .await?;
        Ok(())
    }

    /// Sends to each endpoint able to serve `purpose` in turn: a 404 moves
    /// on to the next, a transient failure is retried, anything else ends.
    async fn request(
        &self,
        purpose: Purpose,
        method: Method,
        path: &str,
        mut headers: HeaderMap,
        range: Option<String>,
    ) -> Result<Response<Incoming>> {
        if let Some(range) = range
            && let Ok(value) = HeaderValue::from_str(&range)
        {
            headers.insert(http::header::RANGE, value);
        }
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        let scope = format!("repository:{}:pull", self.reference.repository);
        let mut last = Error::not_found(format!("{}: no registry endpoint serves it", self.reference));
        for connector in &self.connectors {
            let capabilities = connector.endpoint().capabilities;
            let able = match purpose {
                Purpose::Resolve => capabilities.resolve,
                Purpose::Pull => capabilities.pull,
            };
            if !able {
                continue;
            }
            match self
                .request_at(
                    connector,
                    &method,
                    &connector.url(path),
                    &headers,
                    &scope,
                    Payload::empty(),
                )
                .await
            {
                Ok(response) => return Ok(response),
                Err(e) if e.kind() == ErrorKind::NotFound => last = e,
                Err(e) if e.kind() == ErrorKind::Unavailable && self.connectors.len() > 1 => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn request_at(
        &self,
        connector: &Connector,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        scope: &str,
        body: Payload,
    ) -> Result<Response<Incoming>> {
        let host = &connector.endpoint().host;
        let mut backoff = Duration::from_millis(200);
        let mut answered_401 = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut headers = headers.clone();
            if let Some(value) = self.auth.header(host, scope) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let outcome = connector.send(method.clone(), url, &headers, body.clone()).await;
            let transient = match outcome {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return Ok(response);
                    }
                    if status == StatusCode::UNAUTHORIZED && !answered_401 {
                        answered_401 = true;
                        attempt -= 1;
                        let challenges: Vec<String> = response
                            .headers()
                            .get_all(http::header::WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok().map(str::to_string))
                            .collect();
                        self.auth
                            .unauthorized(connector, host, &self.reference.to_string(), scope, &challenges)
                            .await?;
                        continue;
                    }
                    let message = error_message(response, connector.stall_timeout()).await;
                    let what = format!("{} at {host}", self.reference);
                    match status {
                        StatusCode::NOT_FOUND => {
                            return Err(Error::not_found(format!(
                                "{what}: {} not found{message}",
                                last_part(url)
                            )));
                        }
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            self.auth.forget(host);
                            return Err(Error::new(
                                ErrorKind::PermissionDenied,
                                format!("{what}: access denied ({status}){message}"),
                            ));
                        }
                        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                            Error::unavailable(format!("{what}: {status}{message}"))
                        }
                        _ => return Err(Error::failed_precondition(format!("{what}: {status}{message}"))),
                    }
                }
                Err(e) if e.kind() == ErrorKind::Unavailable => e,
                Err(e) => return Err(e),
            };
            if attempt >= self.config.attempts {
                return Err(transient);
            }
            tracing::debug!(url, error = %transient, attempt, "registry request failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

fn last_part(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn manifest_accept() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let accept = format!("{}, */*;q=0.8", MANIFEST_TYPES.join(", "));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(http::header::ACCEPT, value);
    }
    headers
}

/// The registry's error body, shortened, for the message.
async fn error_message(response: Response<Incoming>, stall: Duration) -> String {
    let body = read_body(response.into_body(), 64 << 10, stall, "the error body")
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    // The distribution spec's errors: {"errors":[{"code","message"}]}.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        && let Some(first) = value.get("errors").and_then(|e| e.get(0))
    {
        let code = first.get("code").and_then(|c| c.as_str()).unwrap_or_default();
        let message = first.get("message").and_then(|c| c.as_str()).unwrap_or_default();
        return format!(" ({code}: {message})");
    }
    format!(" ({})", text.chars().take(200).collect::<String>())
}

/// A manifest's media type from its own `mediaType`, or its shape.
fn sniff_media_type(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(media_type) = value.get("mediaType").and_then(|m| m.as_str()) {
        return Some(media_type.to_string());
    }
    if value.get("manifests").is_some() {
        return Some(MANIFEST_TYPES[0].to_string());
    }
    value.get("layers").map(|_| MANIFEST_TYPES[2].to_string())
}
