//! Events: the exchange, topic rules and what filters see of an envelope.

mod envelope_fields;
mod exchange;
pub mod topic;
mod ttrpc_forward;

pub use exchange::{Exchange, SUBSCRIBER_QUEUE, Subscription};
pub use ttrpc_forward::TtrpcForwarder;

use std::sync::Arc;

use crate::plugin::{Instance, Registration, types};

/// The exchange as a plugin: `io.containerd.event.v1.exchange`. It ends
/// every subscription when the daemon begins to shut down.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::EVENT,
        id: "exchange",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let exchange = Arc::new(Exchange::new());
                let closing = Arc::clone(&exchange);
                let shutdown = ctx.daemon.shutdown.clone();
                tokio::spawn(async move {
                    shutdown.fired().await;
                    closing.close();
                });
                Ok(exchange as Instance)
            })
        }),
    }
}
