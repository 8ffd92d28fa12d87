//! Fixtures for berth's integration tests.
//!
//! Tests start a real berthd on a temporary root, state dir and socket
//! ([`daemon::Daemon`]), drive it with Debian's `ctr` ([`ctr::Ctr`]) or
//! berth's own gRPC client, and clean up everything they started, even
//! when they fail (every fixture cleans up in `Drop`).
//!
//! The binaries under test are found in cargo's target directory (or
//! `BERTH_BIN_DIR`): build the workspace before running the tests, as
//! `scripts/test.sh` does.

pub mod binaries;
pub mod bundle;
pub mod certificates;
pub mod clients;
pub mod console;
pub mod containerd;
pub mod ctr;
pub mod daemon;
pub mod fake_registry;
pub mod images;
pub mod loopfs;
pub mod registry;
pub mod runc;
pub mod seccomp_agent;
pub mod token_server;
pub mod tree;
pub mod wait;
pub mod wire_compat;
