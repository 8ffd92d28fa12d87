//! berth's snapshotters and differ.
//!
//! [`overlay::Overlay`] and [`native::Native`] implement
//! `berth_core::snapshots::Snapshotter`; [`differ::WalkingDiffer`] applies and
//! computes layers; [`conformance`] is the suite every backend passes.

pub mod conformance;
pub mod copy;
pub mod differ;
pub mod fsutil;
pub mod native;
pub mod overlay;
pub mod remove;
pub mod storage;
pub mod storage_backed;

use std::sync::Arc;

use berth_api::containerd::types::Platform;
use berth_core::plugin::{Instance, PluginMeta, Registration, types};
use berth_core::snapshots::SnapshotterPlugin;

/// The platform snapshotters serve: this host's.
fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: String::new(),
        os_version: String::new(),
    }
}

fn snapshotter_meta(root: &std::path::Path) -> PluginMeta {
    PluginMeta {
        platforms: vec![host_platform()],
        exports: [("root".to_string(), root.display().to_string())].into(),
        capabilities: Vec::new(),
    }
}

/// `io.containerd.snapshotter.v1.overlayfs`, at `<root>/snapshots/overlayfs`.
pub fn overlay_registration() -> Registration {
    Registration {
        plugin_type: types::SNAPSHOTTER,
        id: "overlayfs",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let root = ctx.daemon.root.join("snapshots").join("overlayfs");
                ctx.set_meta(snapshotter_meta(&root));
                let backend = tokio::task::spawn_blocking(move || overlay::Overlay::open(&root))
                    .await
                    .map_err(|e| berth_core::Error::internal(format!("overlayfs: {e}")))??;
                Ok(Arc::new(SnapshotterPlugin(Arc::new(backend))) as Instance)
            })
        }),
    }
}

/// `io.containerd.snapshotter.v1.native`, at `<root>/snapshots/native`.
pub fn native_registration() -> Registration {
    Registration {
        plugin_type: types::SNAPSHOTTER,
        id: "native",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let root = ctx.daemon.root.join("snapshots").join("native");
                ctx.set_meta(snapshotter_meta(&root));
                let backend = tokio::task::spawn_blocking(move || native::Native::open(&root))
                    .await
                    .map_err(|e| berth_core::Error::internal(format!("native: {e}")))??;
                Ok(Arc::new(SnapshotterPlugin(Arc::new(backend))) as Instance)
            })
        }),
    }
}
