//! berth's OCI runtime.
//!
//! Creates containers from OCI bundles: namespaces ([`namespaces`]), the
//! root filesystem ([`rootfs`]), control groups on v1, v2 and hybrid hosts
//! ([`cgroups`]), and the process itself ([`process`]). The container's
//! init is this crate's own binary run again ([`init`]); the operations
//! (create, start, kill, delete, pause, resume, update, state) are in
//! [`container`]. `berth-runc` offers them with runc's command line.

pub mod capabilities;
pub mod cgroups;
pub mod container;
pub mod error;
pub mod fd_passing;
pub mod hooks;
pub mod ids;
pub mod init;
pub mod mountinfo;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_agent;
pub mod security_labels;
pub mod self_protection;
pub mod spec;
pub mod state;
pub mod sync;
pub mod syscalls;
pub mod terminal;
pub mod user_namespace;

pub use error::{Error, Result};
