//! The registry client: OCI distribution-spec pull over HTTP(S), with
//! containerd's per-host configuration (`hosts.toml`), Basic and Bearer
//! authorization, retries and stall detection. Written on hyper and
//! rustls rather than a registry crate, so that every transfer streams
//! into the content store (resumable by range), mirrors are tried in the
//! configured order, and a stalled body fails on a timer the daemon sets.

pub mod auth;
pub mod client;
pub mod hosts;
pub mod reference;
pub mod transport;

pub use auth::{Authorizer, CredentialSource, Credentials};
pub use client::{RegistryConfig, Repository};
pub use reference::Reference;
