//! A private stock containerd (Debian's), for interoperability tests: its
//! own config, root, state and socket under a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ctr::Ctr;
use crate::{binaries, wait};

/// A running containerd; killed when dropped.
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// Its ttrpc socket (where shims forward events).
    pub ttrpc_socket: PathBuf,
    child: Child,
}

impl Containerd {
    /// Writes a config (CRI disabled, everything under a temp dir) and
    /// starts containerd with it.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("containerd.sock");
        let ttrpc_socket = dir.path().join("containerd.sock.ttrpc");
        let config = dir.path().join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{ttrpc}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
                root = dir.path().join("root").display(),
                state = dir.path().join("state").display(),
                socket = socket.display(),
                ttrpc = ttrpc_socket.display(),
                opt = dir.path().join("opt").display(),
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        // berth's shim on its PATH, so `--runtime io.containerd.berth.v2` finds it.
        let shim_dir = binaries::berth("containerd-shim-berth-v2")
            .parent()
            .map(|d| d.to_path_buf())
            .unwrap_or_default();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(shim_dir).chain(std::env::split_paths(&path))).expect("PATH");
        let mut child = Command::new(binaries::host("containerd"))
            .env("PATH", path)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let ctr = Ctr::new(&socket);
        wait::until(Duration::from_secs(60), "containerd to answer", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("containerd exited during startup ({status})");
            }
            ctr.run(&["version"]).status.success().then_some(())
        });
        Self {
            dir,
            socket,
            ttrpc_socket,
            child,
        }
    }

    /// A containerd with the busybox image imported on overlayfs, a `ctr`
    /// for it, and the image's name.
    pub fn with_busybox() -> (Self, Ctr, String) {
        let containerd = Self::start();
        let ctr = containerd.ctr();
        let image = crate::images::busybox();
        ctr.import("overlayfs", &image.oci_tar);
        (containerd, ctr, image.name)
    }

    /// `ctr` bound to this containerd.
    pub fn ctr(&self) -> Ctr {
        Ctr::new(&self.socket)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.ctr().remove_all_tasks_and_containers();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
