//! berth's gRPC services. Each module is one containerd service over
//! berth-core, offered as a plugin; [`registrations`] lists them all for the
//! daemon to wire up.

pub mod events;
pub mod health;
pub mod introspection;
pub mod namespace_header;
pub mod namespaces;
pub mod version;

use berth_core::plugin::Registration;

/// Every gRPC service plugin this crate offers.
pub fn registrations() -> Vec<Registration> {
    vec![
        version::registration(),
        introspection::registration(),
        namespaces::registration(),
        events::registration(),
        health::registration(),
    ]
}
