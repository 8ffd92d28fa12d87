//! Connecting to berthd (or containerd) over its Unix socket as a gRPC client.
//!
//! Used by berth's own tools and tests. Requests say which namespace they
//! are for with the `containerd-namespace` header; [`namespaced`] adds it.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// The metadata key that carries the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The metadata key that carries a lease id.
pub const LEASE_HEADER: &str = "containerd-lease";

/// Largest message the client sends or accepts, as containerd's clients.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Opens a channel to the gRPC server listening on `path`.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.as_ref().to_path_buf();
    // The URI is required by the HTTP/2 layer but never resolved: every
    // connection goes to the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Wraps `message` in a request for `namespace`.
pub fn namespaced<T>(namespace: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = namespace.parse() {
        request.metadata_mut().insert(NAMESPACE_HEADER, value);
    }
    request
}
