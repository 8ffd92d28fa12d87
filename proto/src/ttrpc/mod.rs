//! ttrpc, the transport between the daemon and its shims.
//!
//! ttrpc is gRPC's message model without HTTP/2: length-prefixed frames
//! ([`frame`]) on a Unix socket, each carrying a protobuf `ttrpc.Request`
//! (service, method, payload, timeout, metadata) or `ttrpc.Response`
//! (a `google.rpc.Status` and a payload). Calls are unary; client stream ids
//! are odd, so several calls share one connection. The generated
//! `*_ttrpc` modules put typed clients and server traits on top of
//! [`Client`] and [`Server`].

mod client;
pub mod frame;
mod server;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use prost::Message;
use tokio::time::Instant;
use tonic::{Code, Status};

pub use client::Client;
pub use server::Server;

use crate::google::rpc::Status as RpcStatus;
use crate::ttrpc_wire::KeyValue;

/// What a handler's future resolves to: the encoded response, or a status.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send>>;

/// One ttrpc service as the server dispatches to it. Implemented by the
/// generated `*Server` adapters.
pub trait Service: Send + Sync + 'static {
    /// The fully qualified service name, e.g. `containerd.task.v2.Task`.
    fn name(&self) -> &'static str;
    /// Decodes `payload`, runs `method` and encodes its response.
    fn call(&self, method: &str, context: RequestContext, payload: bytes::Bytes) -> ResponseFuture;
}

/// Metadata and deadline a request arrived with.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// Request metadata in the order it was sent; keys may repeat.
    pub metadata: Vec<(String, String)>,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
}

impl RequestContext {
    /// The first value sent for `key`, as ttrpc's Go implementation reads it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Per-call settings on the client side.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Metadata sent with the request (e.g. `containerd-namespace-ttrpc`).
    pub metadata: Vec<(String, String)>,
    /// Gives up after this long with DeadlineExceeded, and tells the server.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Options carrying one metadata pair.
    pub fn with_metadata(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            metadata: vec![(key.into(), value.into())],
            timeout: None,
        }
    }

    /// The same options with a timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn wire_metadata(&self) -> Vec<KeyValue> {
        self.metadata
            .iter()
            .map(|(key, value)| KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }
}

/// Encodes a response message for the wire.
pub fn encode_payload<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes a request payload; a malformed one is the caller's error.
pub fn decode_payload<M: Message + Default>(payload: &[u8]) -> Result<M, Status> {
    M::decode(payload).map_err(|e| Status::invalid_argument(format!("ttrpc: malformed payload: {e}")))
}

fn status_to_wire(status: &Status) -> RpcStatus {
    RpcStatus {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    }
}

fn status_from_wire(status: Option<RpcStatus>) -> Result<(), Status> {
    match status {
        None => Ok(()),
        Some(s) if s.code == Code::Ok as i32 => Ok(()),
        Some(s) => Err(Status::new(Code::from(s.code), s.message)),
    }
}

#[cfg(test)]
mod tests;
