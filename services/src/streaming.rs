//! Streaming: named bidirectional streams other calls use by id (the
//! Transfer service's progress, auth and data streams), as containerd's.
//!
//! The client's first message is a `StreamInit` naming the stream; the
//! daemon registers it, answers with an empty message, and from then on
//! the stream belongs to whichever call takes it by name. When that user
//! is done it drops its handle, which ends the RPC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::any::{self, type_name};
use berth_api::containerd::services::streaming::v1::StreamInit;
use berth_api::containerd::services::streaming::v1::streaming_server::{Streaming, StreamingServer};
use berth_core::Error;
use berth_core::plugin::{Registration, types};
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::namespace_header::{namespace_optional, optional};

/// How long a call waits for a stream it names to be opened.
const TAKE_WAIT: Duration = Duration::from_secs(5);

/// One open stream, as its user holds it.
#[derive(Debug)]
pub struct StreamHandle {
    /// The stream's name.
    pub id: String,
    to_client: mpsc::UnboundedSender<Result<Any, Status>>,
    from_client: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<Any, Status>>>,
}

impl StreamHandle {
    /// Sends a message to the client; false once the client is gone.
    pub fn send(&self, message: Any) -> bool {
        self.to_client.send(Ok(message)).is_ok()
    }

    /// The client's next message; None once it closed its side (or its
    /// call failed).
    pub async fn recv(&self) -> Option<Any> {
        self.recv_checked().await.ok().flatten()
    }

    /// The client's next message; None once it closed its side, an error
    /// when its call failed instead (cancelled, reset): a byte stream cut
    /// off is not a complete one.
    pub async fn recv_checked(&self) -> Result<Option<Any>, Error> {
        match self.from_client.lock().await.recv().await {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(status)) => Err(Error::unavailable(format!(
                "stream {:?} was cut off: {}",
                self.id,
                status.message()
            ))),
            None => Ok(None),
        }
    }
}

/// The streams opened and not yet taken, by namespace and name.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<HashMap<(String, String), Arc<StreamHandle>>>,
    opened: tokio::sync::Notify,
}

impl Streams {
    /// Takes stream `id` of `namespace` for a call's use, waiting briefly
    /// for a client that opens it just now; NotFound names it.
    pub async fn take(&self, namespace: &str, id: &str) -> Result<Arc<StreamHandle>, Error> {
        let deadline = tokio::time::Instant::now() + TAKE_WAIT;
        loop {
            let notified = self.opened.notified();
            if let Some(handle) = self
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(namespace.to_string(), id.to_string()))
            {
                return Ok(handle);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::not_found(format!("stream {id:?}")));
            }
        }
    }

    fn register(&self, namespace: &str, handle: Arc<StreamHandle>) -> Result<(), Error> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), handle.id.clone());
        if open.contains_key(&key) {
            return Err(Error::already_exists(format!("stream {:?}", handle.id)));
        }
        open.insert(key, handle);
        drop(open);
        self.opened.notify_waiters();
        Ok(())
    }

    fn forget(&self, namespace: &str, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), id.to_string()));
    }
}

/// Answers the Streaming service.
#[derive(Debug)]
pub struct StreamingService {
    streams: Arc<Streams>,
}

impl StreamingService {
    /// A service registering into `streams`.
    pub fn new(streams: Arc<Streams>) -> Self {
        Self { streams }
    }
}

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = UnboundedReceiverStream<Result<Any, Status>>;

    async fn stream(&self, request: Request<tonic::Streaming<Any>>) -> Result<Response<Self::StreamStream>, Status> {
        let namespace = optional(&request).unwrap_or_default();
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Error::invalid_argument("the stream closed before its StreamInit"))?;
        let init: StreamInit = any::unpack(&first).ok_or_else(|| {
            Error::invalid_argument(format!(
                "the first message of a stream must be a StreamInit, not {}",
                type_name(&first.type_url)
            ))
        })?;
        if init.id.is_empty() {
            return Err(Error::invalid_argument("StreamInit: the id must not be empty").into());
        }
        let (to_client, outgoing) = mpsc::unbounded_channel();
        let (forward, from_client) = mpsc::unbounded_channel();
        let handle = Arc::new(StreamHandle {
            id: init.id.clone(),
            to_client,
            from_client: tokio::sync::Mutex::new(from_client),
        });
        // The ack: the stream is registered and may be named.
        let ack = Any {
            type_url: "google.protobuf.Empty".into(),
            value: Vec::new(),
        };
        let _ = handle.to_client.send(Ok(ack));
        let weak = Arc::downgrade(&handle);
        self.streams.register(&namespace, handle)?;
        let (streams, id) = (Arc::clone(&self.streams), init.id);
        tokio::spawn(async move {
            // Until the client closes its side or goes away.
            loop {
                match incoming.message().await {
                    Ok(Some(message)) => {
                        if forward.send(Ok(message)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let _ = forward.send(Err(status));
                        break;
                    }
                }
            }
            // A stream nobody took goes when its client does.
            if weak.upgrade().is_some() {
                streams.forget(&namespace, &id);
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(outgoing)))
    }
}

/// `io.containerd.streaming.v1.manager`: the open streams.
pub fn manager_registration() -> Registration {
    Registration {
        plugin_type: types::STREAMING,
        id: "manager",
        requires: &[],
        default_config: None,
        init: Box::new(|_ctx| {
            Box::pin(async move { Ok(Arc::new(Streams::default()) as berth_core::plugin::Instance) })
        }),
    }
}

/// `io.containerd.grpc.v1.streaming`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "streaming",
        requires: &[types::STREAMING],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let streams: Arc<Streams> = ctx.get(types::STREAMING)?;
                routed_service!(
                    ctx,
                    StreamingServer::new(StreamingService::new(streams)),
                    namespace_optional
                )
            })
        }),
    }
}
