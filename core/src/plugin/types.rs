//! Plugin type URIs, as containerd names them (`ctr plugins ls` shows these).

/// Marker in `requires`: initialise after every plugin that does not itself require it.
pub const ALL: &str = "*";
/// The metadata store.
pub const METADATA: &str = "io.containerd.metadata.v1";
/// The event exchange.
pub const EVENT: &str = "io.containerd.event.v1";
/// The content store.
pub const CONTENT: &str = "io.containerd.content.v1";
/// Snapshotters (overlayfs, native, proxies).
pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
/// Differs (layer apply and compute).
pub const DIFFER: &str = "io.containerd.differ.v1";
/// The garbage collector.
pub const GC: &str = "io.containerd.gc.v1";
/// Lease management.
pub const LEASE: &str = "io.containerd.lease.v1";
/// In-process services the gRPC layer wraps.
pub const SERVICE: &str = "io.containerd.service.v1";
/// gRPC services served on the daemon's socket.
pub const GRPC: &str = "io.containerd.grpc.v1";
/// ttrpc services served on `<address>.ttrpc`.
pub const TTRPC: &str = "io.containerd.ttrpc.v1";
/// The shim runtime manager.
pub const RUNTIME_V2: &str = "io.containerd.runtime.v2";
/// Internal plugins with no API of their own.
pub const INTERNAL: &str = "io.containerd.internal.v1";
/// Named streams shared by services (`io.containerd.streaming.v1`).
pub const STREAMING: &str = "io.containerd.streaming.v1";
/// Image transfers (`io.containerd.transfer.v1`).
pub const TRANSFER: &str = "io.containerd.transfer.v1";
