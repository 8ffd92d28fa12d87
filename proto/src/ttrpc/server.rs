//! The ttrpc server: dispatches unary requests to registered services.
//!
//! Each connection has a reader that decodes requests and spawns one task per
//! call, and a writer task that sends responses as they finish, so a slow
//! call never holds up a fast one. Peers must run as the same user, as
//! containerd's ttrpc servers require.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::Status;

use super::frame::{self, Frame, KIND_REQUEST, KIND_RESPONSE};
use super::{RequestContext, Service, status_to_wire};
use crate::ttrpc_wire::{Request, Response};

/// A set of services served on Unix sockets.
#[derive(Default)]
pub struct Server {
    services: HashMap<&'static str, Arc<dyn Service>>,
    allow_any_user: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Server {
    /// A server with no services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a service; a second service with the same name replaces the first.
    pub fn register(mut self, service: impl Service) -> Self {
        self.services.insert(service.name(), Arc::new(service));
        self
    }

    /// Accepts peers running as any user (tests only; the daemon and shims
    /// keep the same-user rule).
    pub fn allow_any_user(mut self) -> Self {
        self.allow_any_user = true;
        self
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting and
    /// gives in-flight calls up to `grace` to finish.
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> io::Result<()> {
        let server = Arc::new(self);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    match accepted {
                        Ok((stream, _)) => {
                            let server = Arc::clone(&server);
                            let stop = stop_rx.clone();
                            connections.spawn(async move { server.serve_connection(stream, stop).await });
                        }
                        Err(e) if is_transient_accept_error(&e) => {
                            tracing::warn!(error = %e, "ttrpc: accept failed; retrying");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            connections.shutdown().await;
        }
        Ok(())
    }

    /// Serves one connection until the peer closes it or `stop` turns true
    /// (then in-flight calls finish first).
    async fn serve_connection(&self, stream: UnixStream, mut stop: watch::Receiver<bool>) {
        if !self.allow_any_user && !same_user(&stream) {
            tracing::warn!("ttrpc: refused a peer running as another user");
            return;
        }
        let (mut read, mut write) = stream.into_split();
        let (responses_tx, mut responses) = mpsc::channel::<(u32, Response)>(64);
        let writer = tokio::spawn(async move {
            while let Some((stream_id, response)) = responses.recv().await {
                let data = response.encode_to_vec();
                if let Err(e) = frame::write_frame(&mut write, stream_id, KIND_RESPONSE, 0, &data).await {
                    tracing::debug!(error = %e, "ttrpc: write failed");
                    break;
                }
            }
        });

        loop {
            let next = tokio::select! {
                next = frame::read_frame(&mut read) => next,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            match next {
                Ok(Some(Frame::Complete(header, data))) => {
                    if header.kind != KIND_REQUEST {
                        continue; // data frames and unknown kinds: unary server ignores them
                    }
                    self.dispatch(header.stream_id, &data, responses_tx.clone());
                }
                Ok(Some(Frame::Oversized(header))) => {
                    let status = Status::resource_exhausted(format!(
                        "message length {} exceeds maximum message size of {}",
                        header.length,
                        frame::MAX_DATA_LEN
                    ));
                    let _ = responses_tx.send((header.stream_id, error_response(&status))).await;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "ttrpc: read failed");
                    break;
                }
            }
        }
        // The writer ends once every in-flight call has sent its response.
        drop(responses_tx);
        let _ = writer.await;
    }

    fn dispatch(&self, stream_id: u32, data: &[u8], responses: mpsc::Sender<(u32, Response)>) {
        let request = match Request::decode(data) {
            Ok(request) => request,
            Err(e) => {
                let status = Status::invalid_argument(format!("unmarshal request error: {e}"));
                tokio::spawn(async move { responses.send((stream_id, error_response(&status))).await });
                return;
            }
        };
        if stream_id % 2 != 1 {
            let status = Status::invalid_argument("StreamID must be odd for client initiated streams");
            tokio::spawn(async move { responses.send((stream_id, error_response(&status))).await });
            return;
        }
        let service = self.services.get(request.service.as_str()).cloned();
        tokio::spawn(async move {
            let response = match service {
                None => error_response(&Status::unimplemented(format!("service {}", request.service))),
                Some(service) => {
                    let timeout =
                        (request.timeout_nano > 0).then(|| Duration::from_nanos(request.timeout_nano.unsigned_abs()));
                    let context = RequestContext {
                        metadata: request.metadata.into_iter().map(|kv| (kv.key, kv.value)).collect(),
                        deadline: timeout.map(|t| tokio::time::Instant::now() + t),
                    };
                    let call = service.call(&request.method, context, Bytes::from(request.payload));
                    let result = match timeout {
                        Some(t) => tokio::time::timeout(t, call).await.unwrap_or_else(|_| {
                            Err(Status::deadline_exceeded(format!(
                                "{}/{} exceeded its deadline",
                                request.service, request.method
                            )))
                        }),
                        None => call.await,
                    };
                    match result {
                        Ok(payload) => Response {
                            status: Some(status_to_wire(&Status::ok(""))),
                            payload,
                        },
                        Err(status) => error_response(&status),
                    }
                }
            };
            let _ = responses.send((stream_id, response)).await;
        });
    }
}

fn error_response(status: &Status) -> Response {
    Response {
        status: Some(status_to_wire(status)),
        payload: Vec::new(),
    }
}

fn same_user(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        Ok(cred) => cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(e) => {
            tracing::warn!(error = %e, "ttrpc: cannot read peer credentials");
            false
        }
    }
}

/// Accept errors that pass (out of descriptors or memory, an aborted
/// handshake): the listener stays usable, so wait briefly and go on.
fn is_transient_accept_error(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|code| {
        matches!(
            Errno::from_raw(code),
            Errno::EMFILE | Errno::ENFILE | Errno::ECONNABORTED | Errno::ENOMEM | Errno::ENOBUFS
        )
    })
}
