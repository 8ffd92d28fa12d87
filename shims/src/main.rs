//! containerd-shim-berth-v2: one process per container, speaking
//! containerd's runtime v2 shim protocol (ttrpc `containerd.task.v2.Task`)
//! and running the container through berth-runtime in this very process.
//! It is a subreaper and the container's parent, so the container keeps
//! running when the daemon stops, restarts or crashes.

mod args;
mod binary_logger;
mod container_runtime;
mod delete;
mod events;
mod metrics;
mod oom;
mod service;
mod socket_file;
mod start;
mod stdio;

use std::os::fd::FromRawFd as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_api::containerd::task::v2::task_ttrpc::TaskServer;
use tokio::signal::unix::{SignalKind, signal};

/// Where the runtime keeps container state for the shims of one daemon:
/// `<state>/berth-runtime/<namespace>`, the bundle being
/// `<state>/<dir>/<namespace>/<id>`.
pub fn runtime_root(bundle: &Path, namespace: &str) -> PathBuf {
    let state = bundle
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap_or(Path::new("/run/berth"));
    state.join("berth-runtime").join(namespace)
}

fn main() {
    // The container's init is this binary run again: become it if so.
    berth_runtime::init::run_if_init();
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => fail(&e, 2),
    };
    let outcome = match args.action {
        Some(args::Action::Start) => start::start(&args).map(|_| ()),
        Some(args::Action::Delete) => delete::run(&args),
        None => serve(&args),
    };
    if let Err(e) = outcome {
        fail(&e, 1);
    }
}

/// Reports `error` on stderr (the daemon shows it) and exits.
fn fail(error: &str, code: i32) -> ! {
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("containerd-shim-berth-v2: {error}\n").as_bytes(),
    );
    std::process::exit(code)
}

/// Serves the task API on the socket `start` passed as descriptor 3, until
/// the daemon shuts the shim down.
fn serve(args: &args::Args) -> Result<(), String> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async {
        // SAFETY: `start` passed the listening socket as this descriptor,
        // for this process alone.
        let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(start::LISTENER_FD) };
        listener.set_nonblocking(true).map_err(|e| format!("listener: {e}"))?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
        let publisher = events::Publisher::start(std::env::var("TTRPC_ADDRESS").ok(), args.namespace.clone());
        let socket_file = match start::socket_address(args) {
            start::SocketAddress::Path(path) => socket_file::SocketFile::claim(path),
            start::SocketAddress::Abstract(_) => None,
        };
        let shim = service::Shim::new(
            runtime_root(&args.bundle, &args.namespace),
            publisher.clone(),
            socket_file,
        );
        let inner = shim.inner.clone();
        tokio::spawn(reap(inner.clone()));
        let mut shutdown = inner.shutdown.subscribe();
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let server = berth_api::ttrpc::Server::new().register(TaskServer(std::sync::Arc::new(shim)));
        server
            .serve(listener, stop, Duration::from_secs(2))
            .await
            .map_err(|e| format!("serving: {e}"))?;
        publisher.drain(Duration::from_secs(5)).await;
        if let Some(file) = &inner.socket_file {
            file.remove_if_ours();
        }
        Ok::<(), String>(())
    })?;
    Ok(())
}

/// Reaps every child on SIGCHLD and records the exits the service knows.
async fn reap(inner: std::sync::Arc<service::Inner>) {
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        return;
    };
    loop {
        {
            let _children = inner.children.lock().await;
            loop {
                match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::Exited(pid, code)) => inner.reaped(pid.as_raw() as u32, code as u32),
                    Ok(nix::sys::wait::WaitStatus::Signaled(pid, signal, _)) => {
                        inner.reaped(pid.as_raw() as u32, 128 + signal as u32);
                    }
                    Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}
