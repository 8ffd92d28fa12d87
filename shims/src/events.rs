//! Task events to the daemon: `containerd.services.events.ttrpc.v1.Events/
//! Forward` on `TTRPC_ADDRESS`, in order, retried with a growing backoff
//! while the daemon is away (a restarting daemon gets every event once it
//! is back).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_api::containerd::services::events::ttrpc::v1::events_ttrpc::EventsClient;
use berth_api::containerd::services::events::ttrpc::v1::{Envelope, ForwardRequest};
use berth_api::ttrpc::{CallOptions, Client};
use prost::Name;
use tokio::sync::mpsc;

/// Sends events in the background.
#[derive(Clone, Debug)]
pub struct Publisher {
    queue: mpsc::UnboundedSender<Envelope>,
    namespace: String,
    /// Events queued and not yet handed over.
    pending: Arc<AtomicUsize>,
}

impl Publisher {
    /// A publisher to the daemon at `address` (nothing is sent without one).
    pub fn start(address: Option<String>, namespace: String) -> Self {
        let (queue, mut incoming) = mpsc::unbounded_channel::<Envelope>();
        let pending = Arc::new(AtomicUsize::new(0));
        let count = pending.clone();
        tokio::spawn(async move {
            let Some(address) = address else {
                while incoming.recv().await.is_some() {
                    count.fetch_sub(1, Ordering::SeqCst);
                }
                return;
            };
            let mut client: Option<EventsClient> = None;
            while let Some(envelope) = incoming.recv().await {
                let request = ForwardRequest {
                    envelope: Some(envelope),
                };
                // Backs off while the daemon is away (doubling to 2 s), so
                // a restarted daemon and its clients are settled when the
                // events that waited arrive.
                let mut backoff = Duration::from_millis(100);
                loop {
                    if client.is_none() {
                        client = connect(&address).await;
                    }
                    if let Some(events) = &client {
                        let options = CallOptions::default().timeout(Duration::from_secs(5));
                        if events.forward(&options, &request).await.is_ok() {
                            count.fetch_sub(1, Ordering::SeqCst);
                            break;
                        }
                        client = None;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        });
        Self {
            queue,
            namespace,
            pending,
        }
    }

    /// The namespace the events are in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Queues one event under `topic`.
    pub fn publish<M: prost::Message + Name>(&self, topic: &str, event: &M) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let _ = self.queue.send(Envelope {
            timestamp: Some(berth_core::timestamps::now()),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: Some(berth_api::any::pack(event)),
        });
    }

    /// Resolves once every queued event has been handed over, or after
    /// `limit`; for an orderly exit.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn connect(address: &str) -> Option<EventsClient> {
    let client = match address.strip_prefix("unix://") {
        Some(path) => Client::connect(path).await.ok()?,
        None if address.starts_with('/') => Client::connect(address).await.ok()?,
        None => Client::connect_abstract(address.as_bytes()).await.ok()?,
    };
    Some(EventsClient::new(client))
}
