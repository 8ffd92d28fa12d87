//! The exchange every event passes through: services publish, shims
//! forward, subscribers (`ctr events`, CRI adapters) receive.
//!
//! Publishing never waits for a subscriber: each subscriber has its own
//! queue, filtered at publish time. A subscriber whose queue fills up (it
//! stopped reading) is cut off with an error rather than allowed to grow
//! without bound or to stall publishers.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use berth_api::any::pack;
use berth_api::containerd::services::events::v1::Envelope;
use futures_util::Stream;
use prost::{Message, Name};
use prost_types::Any;
use tokio::sync::mpsc;

use super::envelope_fields::EnvelopeFields;
use super::topic;
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::{identifiers, timestamps};

/// Events a subscriber may fall behind by before it is cut off.
pub const SUBSCRIBER_QUEUE: usize = 65_536;

struct Subscriber {
    id: u64,
    filter: Filter,
    queue: mpsc::Sender<Arc<Envelope>>,
    overflowed: Arc<AtomicBool>,
}

/// Publishes events and fans them out to subscribers.
#[derive(Default)]
pub struct Exchange {
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("subscribers", &self.lock().len())
            .finish()
    }
}

impl Exchange {
    /// An exchange with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // Holders never panic mid-update, so a poisoned list is still consistent.
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `event` on `topic` for `namespace`, stamped with the current time.
    pub fn publish<M: Message + Name>(&self, namespace: &str, topic: &str, event: &M) -> Result<()> {
        self.publish_any(namespace, topic, pack(event))
    }

    /// Publishes an already packed event (the Events.Publish RPC).
    pub fn publish_any(&self, namespace: &str, topic: &str, event: Any) -> Result<()> {
        identifiers::validate("namespace", namespace)?;
        topic::validate(topic)?;
        self.dispatch(Envelope {
            timestamp: Some(timestamps::now()),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: Some(event),
        });
        Ok(())
    }

    /// Sends an envelope stamped elsewhere (a shim, another daemon). Its
    /// namespace, topic and timestamp must be valid.
    pub fn forward(&self, envelope: Envelope) -> Result<()> {
        identifiers::validate("namespace", &envelope.namespace).map_err(|e| e.with_context("event envelope"))?;
        topic::validate(&envelope.topic).map_err(|e| e.with_context("event envelope"))?;
        if timestamps::is_zero(envelope.timestamp.as_ref()) {
            return Err(Error::invalid_argument(format!(
                "event envelope on {:?}: timestamp must be set on forwarded events",
                envelope.topic
            )));
        }
        self.dispatch(envelope);
        Ok(())
    }

    fn dispatch(&self, envelope: Envelope) {
        tracing::debug!(namespace = %envelope.namespace, topic = %envelope.topic, "event");
        let envelope = Arc::new(envelope);
        let fields = EnvelopeFields::new(&envelope);
        let mut subscribers = self.lock();
        subscribers.retain(|subscriber| {
            if !subscriber.filter.matches(&fields) {
                return !subscriber.queue.is_closed();
            }
            match subscriber.queue.try_send(Arc::clone(&envelope)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        subscriber = subscriber.id,
                        "event subscriber fell too far behind; cutting it off"
                    );
                    subscriber.overflowed.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Subscribes to every event that passes `filter`, from now on and in
    /// every namespace. The stream ends when the exchange closes.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        let (queue, receiver) = mpsc::channel(SUBSCRIBER_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        if !self.closed.load(Ordering::Acquire) {
            self.lock().push(Subscriber {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                filter,
                queue,
                overflowed: Arc::clone(&overflowed),
            });
        }
        Subscription {
            receiver,
            overflowed,
            done: false,
        }
    }

    /// Ends every subscription (daemon shutdown); later subscriptions end at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
    }

    /// How many subscribers are attached.
    pub fn subscriber_count(&self) -> usize {
        self.lock().len()
    }
}

/// A stream of envelopes for one subscriber.
pub struct Subscription {
    receiver: mpsc::Receiver<Arc<Envelope>>,
    overflowed: Arc<AtomicBool>,
    done: bool,
}

impl Stream for Subscription {
    type Item = Result<Arc<Envelope>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(envelope)) => Poll::Ready(Some(Ok(envelope))),
            Poll::Ready(None) => {
                self.done = true;
                if self.overflowed.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(Error::new(
                        crate::error::ErrorKind::ResourceExhausted,
                        format!("event subscription fell more than {SUBSCRIBER_QUEUE} events behind and was ended"),
                    ))))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::containerd::events::{NamespaceCreate, NamespaceDelete};
    use futures_util::StreamExt;
    use std::time::Duration;

    fn create(name: &str) -> NamespaceCreate {
        NamespaceCreate {
            name: name.into(),
            labels: Default::default(),
        }
    }

    async fn next(sub: &mut Subscription) -> Arc<Envelope> {
        tokio::time::timeout(Duration::from_secs(2), sub.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("no error")
    }

    async fn nothing_pending(sub: &mut Subscription) {
        assert!(
            tokio::time::timeout(Duration::from_millis(50), sub.next())
                .await
                .is_err(),
            "no further event"
        );
    }

    #[tokio::test]
    async fn subscribers_see_published_events_with_namespace_topic_time() {
        let exchange = Exchange::new();
        let mut sub = exchange.subscribe(Filter::always());
        exchange
            .publish("default", "/namespaces/create", &create("n1"))
            .unwrap();
        let envelope = next(&mut sub).await;
        assert_eq!(envelope.namespace, "default");
        assert_eq!(envelope.topic, "/namespaces/create");
        assert!(!timestamps::is_zero(envelope.timestamp.as_ref()));
        let event = envelope.event.as_ref().unwrap();
        assert_eq!(event.type_url, "containerd.events.NamespaceCreate");
    }

    #[tokio::test]
    async fn filters_on_topic_namespace_and_event_fields() {
        let exchange = Exchange::new();
        let mut by_topic = exchange.subscribe(Filter::parse_all(&[r#"topic=="/namespaces/create""#]).unwrap());
        let mut by_ns = exchange.subscribe(Filter::parse_all(&["namespace==other"]).unwrap());
        let mut by_body = exchange.subscribe(Filter::parse_all(&["event.name==n2"]).unwrap());
        exchange
            .publish("default", "/namespaces/create", &create("n1"))
            .unwrap();
        exchange.publish("other", "/namespaces/create", &create("n2")).unwrap();
        exchange
            .publish("default", "/namespaces/delete", &NamespaceDelete { name: "n1".into() })
            .unwrap();

        assert_eq!(next(&mut by_topic).await.namespace, "default");
        assert_eq!(next(&mut by_topic).await.namespace, "other");
        nothing_pending(&mut by_topic).await;
        assert_eq!(next(&mut by_ns).await.topic, "/namespaces/create");
        nothing_pending(&mut by_ns).await;
        assert_eq!(next(&mut by_body).await.namespace, "other");
        nothing_pending(&mut by_body).await;
    }

    #[tokio::test]
    async fn bad_topics_and_namespaces_are_refused() {
        let exchange = Exchange::new();
        let err = exchange.publish("default", "tasks", &create("x")).unwrap_err();
        assert!(err.to_string().contains("must start with '/'"), "{err}");
        let err = exchange.publish("Bad NS", "/x", &create("x")).unwrap_err();
        assert!(err.to_string().contains("\"Bad NS\""), "{err}");
    }

    #[tokio::test]
    async fn forward_keeps_the_envelope_and_requires_a_timestamp() {
        let exchange = Exchange::new();
        let mut sub = exchange.subscribe(Filter::always());
        let stamped = Envelope {
            timestamp: Some(prost_types::Timestamp { seconds: 42, nanos: 1 }),
            namespace: "n1".into(),
            topic: "/tasks/exit".into(),
            event: None,
        };
        exchange.forward(stamped.clone()).unwrap();
        assert_eq!(*next(&mut sub).await, stamped);
        let err = exchange
            .forward(Envelope {
                timestamp: None,
                ..stamped.clone()
            })
            .unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
        let err = exchange
            .forward(Envelope {
                namespace: String::new(),
                ..stamped
            })
            .unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
    }

    #[tokio::test]
    async fn dropped_subscribers_are_forgotten() {
        let exchange = Exchange::new();
        let sub = exchange.subscribe(Filter::always());
        assert_eq!(exchange.subscriber_count(), 1);
        drop(sub);
        exchange.publish("default", "/x", &create("a")).unwrap();
        assert_eq!(exchange.subscriber_count(), 0);
    }

    #[tokio::test]
    async fn close_ends_every_subscription() {
        let exchange = Exchange::new();
        let mut sub = exchange.subscribe(Filter::always());
        exchange.close();
        assert!(sub.next().await.is_none());
        let mut late = exchange.subscribe(Filter::always());
        assert!(late.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stalled_subscriber_is_cut_off_without_blocking_publishers() {
        let exchange = Exchange::new();
        let mut stalled = exchange.subscribe(Filter::always());
        let mut other = exchange.subscribe(Filter::parse_all(&[r#"topic=="/last""#]).unwrap());
        for _ in 0..=SUBSCRIBER_QUEUE {
            exchange.publish("default", "/x", &create("a")).unwrap();
        }
        exchange.publish("default", "/last", &create("a")).unwrap();
        assert_eq!(next(&mut other).await.topic, "/last");
        let mut received = 0;
        let mut error = None;
        while let Some(item) = stalled.next().await {
            match item {
                Ok(_) => received += 1,
                Err(e) => error = Some(e),
            }
        }
        assert_eq!(received, SUBSCRIBER_QUEUE);
        let error = error.expect("the stalled subscriber learns it was cut off");
        assert_eq!(error.kind(), crate::error::ErrorKind::ResourceExhausted);
    }
}
