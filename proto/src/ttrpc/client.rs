//! The ttrpc client: many concurrent unary calls over one connection.
//!
//! A writer task owns the socket's write half so that a caller dropped
//! mid-call can never leave half a frame on the wire; a reader task matches
//! responses to callers by stream id and fails every pending call when the
//! connection ends.

use std::collections::HashMap;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use super::frame::{self, Frame, KIND_REQUEST, KIND_RESPONSE};
use super::{CallOptions, status_from_wire};
use crate::ttrpc_wire::{Request, Response};

type Pending = Mutex<HashMap<u32, oneshot::Sender<Result<Response, Status>>>>;

/// A connection to a ttrpc server. Cheap to clone; clones share the
/// connection, which closes when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    outgoing: mpsc::Sender<(u32, Vec<u8>)>,
    pending: Arc<Pending>,
    next_stream: AtomicU32,
    closed: watch::Receiver<bool>,
}

impl Client {
    /// Connects to a socket at a filesystem path.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        let stream = UnixStream::connect(path.as_ref()).await?;
        Ok(Self::from_stream(stream))
    }

    /// Connects to a socket in the abstract namespace (name without the
    /// leading NUL), as shims listen on when a path would be too long.
    pub async fn connect_abstract(name: &[u8]) -> io::Result<Self> {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        let stream = UnixStream::connect_addr(&addr.into()).await?;
        Ok(Self::from_stream(stream))
    }

    /// Runs the client over an already connected stream.
    pub fn from_stream(stream: UnixStream) -> Self {
        let (read, write) = stream.into_split();
        let (outgoing, queue) = mpsc::channel(64);
        let pending: Arc<Pending> = Arc::default();
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(write_loop(write, queue));
        tokio::spawn(read_loop(read, Arc::clone(&pending), closed_tx));
        Self {
            shared: Arc::new(Shared {
                outgoing,
                pending,
                next_stream: AtomicU32::new(1),
                closed,
            }),
        }
    }

    /// Whether the connection has ended (peer gone or protocol error).
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Resolves once the connection has ended; lets a daemon notice a shim's death.
    pub async fn closed(&self) {
        let mut closed = self.shared.closed.clone();
        // An error means the reader task is gone, which also means closed.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Calls `service/method` with `request` and decodes the response.
    pub async fn unary<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
        request: &Req,
    ) -> Result<Resp, Status> {
        let payload = self.call_raw(service, method, options, request.encode_to_vec()).await?;
        Resp::decode(payload.as_slice())
            .map_err(|e| Status::internal(format!("ttrpc: malformed response to {service}/{method}: {e}")))
    }

    /// Calls `service/method` with an encoded payload; returns the encoded response.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        options: &CallOptions,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        let timeout_nano = options
            .timeout
            .map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let request = Request {
            service: service.to_string(),
            method: method.to_string(),
            payload,
            timeout_nano,
            metadata: options.wire_metadata(),
        };
        // Odd ids for client-initiated streams; wrap back to 1 rather than 0.
        let stream_id = self
            .shared
            .next_stream
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| {
                Some(if id >= u32::MAX - 2 { 1 } else { id + 2 })
            })
            .unwrap_or(1);

        let (reply_tx, reply_rx) = oneshot::channel();
        self.pending().insert(stream_id, reply_tx);
        let _guard = PendingGuard {
            pending: &self.shared.pending,
            stream_id,
        };
        if self.is_closed()
            || self
                .shared
                .outgoing
                .send((stream_id, request.encode_to_vec()))
                .await
                .is_err()
        {
            return Err(Status::unavailable("ttrpc: connection closed"));
        }

        let reply = match options.timeout {
            Some(timeout) => match tokio::time::timeout(timeout, reply_rx).await {
                Ok(reply) => reply,
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "ttrpc: {service}/{method} did not answer within {timeout:?}"
                    )));
                }
            },
            None => reply_rx.await,
        };
        let response = reply.map_err(|_| Status::unavailable("ttrpc: connection closed"))??;
        status_from_wire(response.status)?;
        Ok(response.payload)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Result<Response, Status>>>> {
        lock(&self.shared.pending)
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Result<Response, Status>>>> {
    // A panic while holding this lock cannot leave the map inconsistent
    // (single insert/remove calls), so a poisoned lock is still usable.
    pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes a call's entry when the caller stops waiting (answer, timeout or drop).
struct PendingGuard<'a> {
    pending: &'a Pending,
    stream_id: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.stream_id);
    }
}

async fn write_loop(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<(u32, Vec<u8>)>) {
    while let Some((stream_id, data)) = queue.recv().await {
        if let Err(e) = frame::write_frame(&mut write, stream_id, KIND_REQUEST, 0, &data).await {
            tracing::debug!(error = %e, "ttrpc client: write failed");
            break;
        }
    }
    // Every client handle is gone (or the socket broke): tell the server.
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut write).await;
}

async fn read_loop(mut read: OwnedReadHalf, pending: Arc<Pending>, closed: watch::Sender<bool>) {
    loop {
        match frame::read_frame(&mut read).await {
            Ok(Some(Frame::Complete(header, data))) => {
                if header.kind != KIND_RESPONSE {
                    continue; // unknown kinds are skipped, for forward compatibility
                }
                let waiter = lock(&pending).remove(&header.stream_id);
                let Some(waiter) = waiter else {
                    tracing::debug!(stream = header.stream_id, "ttrpc client: response for no pending call");
                    continue;
                };
                let response = Response::decode(data.as_slice())
                    .map_err(|e| Status::internal(format!("ttrpc: malformed response frame: {e}")));
                let _ = waiter.send(response);
            }
            Ok(Some(Frame::Oversized(header))) => {
                if let Some(waiter) = lock(&pending).remove(&header.stream_id) {
                    let _ = waiter.send(Err(Status::resource_exhausted(format!(
                        "ttrpc: response of {} bytes exceeds the maximum of {} bytes",
                        header.length,
                        frame::MAX_DATA_LEN
                    ))));
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "ttrpc client: read failed");
                break;
            }
        }
    }
    let _ = closed.send(true);
    // Dropping the senders wakes every waiter with "connection closed".
    lock(&pending).clear();
}
