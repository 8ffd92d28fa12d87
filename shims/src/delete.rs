//! `delete`: the daemon's cleanup when a shim is gone (killed, or never
//! answered): force-delete the container, unmount its rootfs, and print a
//! DeleteResponse (exit 137: the container was killed).

use std::io::Write as _;

use berth_api::containerd::task::v2::DeleteResponse;
use berth_runtime::container::Globals;
use prost::Message as _;

use crate::args::Args;
use crate::container_runtime::{Binary, ContainerRuntime, InProcess};

/// Runs `delete` for the container of `args`.
pub fn run(args: &Args) -> Result<(), String> {
    let globals = Globals {
        root: crate::runtime_root(&args.bundle, &args.namespace),
        ..Globals::default()
    };
    let pid = berth_runtime::container::query::stored(&globals, &args.id)
        .map(|state| state.pid as u32)
        .or_else(|_| std::fs::read_to_string(args.bundle.join("init.pid")).map(|p| p.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let runtime: Box<dyn ContainerRuntime> = match Binary::recorded(&args.bundle) {
        Some(binary) => Box::new(binary),
        None => Box::new(InProcess { globals }),
    };
    match runtime.delete(&args.id, true) {
        Ok(()) => {}
        Err(e) if e.kind == berth_runtime::error::Kind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    crate::service::unmount_rootfs(&args.bundle).map_err(|e| e.message().to_string())?;
    let response = DeleteResponse {
        pid,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(berth_core::timestamps::now()),
    };
    let mut stdout = std::io::stdout();
    stdout
        .write_all(&response.encode_to_vec())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing the response: {e}"))
}
