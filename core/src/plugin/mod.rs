//! The plugin registry: every part of the daemon is a plugin with a type
//! URI, an id, the types it requires and an init function, initialised in
//! dependency order; introspection lists them with their init errors.

mod grpc;
mod registry;
mod set;
pub mod types;

pub use grpc::GrpcService;
pub use registry::{DaemonContext, InitContext, InitFn, InitFuture, Registration, Registry, skip};
pub use set::{Instance, PluginEntry, PluginMeta, PluginSet};
