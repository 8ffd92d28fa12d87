//! berth's gRPC services. Each module is one containerd service over
//! berth-core, offered as a plugin; [`registrations`] lists them all for the
//! daemon to wire up.

/// Finishes a service plugin's init: applies the daemon's message size
/// limits to a generated tonic server, puts it behind a namespace
/// interceptor and returns it as the instance the daemon routes. (The size
/// setters are inherent methods of each generated server, so no trait or
/// function can take them generically.)
macro_rules! routed_service {
    ($ctx:expr, $server:expr, $interceptor:expr) => {{
        let server = $server
            .max_decoding_message_size($ctx.daemon.max_recv_message_size)
            .max_encoding_message_size($ctx.daemon.max_send_message_size);
        let service = berth_core::plugin::GrpcService::new(tonic::service::interceptor::InterceptedService::new(
            server,
            $interceptor,
        ));
        Ok(std::sync::Arc::new(service) as berth_core::plugin::Instance)
    }};
}

pub mod byte_stream;
pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod health;
pub mod images;
pub mod introspection;
pub mod lease_header;
pub mod leases;
pub mod namespace_header;
pub mod namespaces;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod version;

use berth_core::events::Exchange;
use berth_core::plugin::Registration;

/// Publishes the event of a change that is already committed: a failure to
/// publish is logged, not turned into a failed request.
pub(crate) fn publish<M: prost::Message + prost::Name>(events: &Exchange, namespace: &str, topic: &str, event: &M) {
    if let Err(e) = events.publish(namespace, topic, event) {
        tracing::warn!(topic, error = %e, "publishing event failed");
    }
}

/// Every gRPC service plugin this crate offers.
pub fn registrations() -> Vec<Registration> {
    vec![
        version::registration(),
        introspection::registration(),
        namespaces::registration(),
        events::registration(),
        content::registration(),
        images::registration(),
        containers::registration(),
        leases::registration(),
        snapshots::registration(),
        tasks::registration(),
        diff::registration(),
        streaming::manager_registration(),
        streaming::registration(),
        transfer::local_registration(),
        transfer::registration(),
        health::registration(),
    ]
}
