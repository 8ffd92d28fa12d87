//! Which plugins berthd is made of. Every part is registered here, in the
//! order that breaks ties when dependencies allow either.

use berth_core::plugin::Registry;

/// Every plugin berthd can run.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(berth_core::events::registration());
    registry.register(berth_core::metadata::registration());
    registry.register(berth_core::content::registration());
    registry.register(berth_snapshotters::overlay_registration());
    registry.register(berth_snapshotters::native_registration());
    registry.register(berth_snapshotters::differ::registration());
    registry.register(berth_core::gc::registration());
    registry.register(berth_core::runtime::registration());
    for registration in berth_services::registrations() {
        registry.register(registration);
    }
    registry
}
