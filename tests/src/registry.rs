//! A private Debian `docker-registry` on a free loopback port, with its
//! own `config.yml` and a temporary storage directory; stopped on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{binaries, wait};

/// A running registry serving plain HTTP on 127.0.0.1.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub address: String,
    child: Child,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Registry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry")
            .tempdir()
            .expect("temp dir");
        let address = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
                dir.path().join("storage").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let mut child = Command::new(binaries::host("docker-registry"))
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry (install docker-registry)");
        wait::until(Duration::from_secs(30), "the registry to answer", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("docker-registry exited during startup ({status})");
            }
            std::net::TcpStream::connect(&address).ok().map(|_| ())
        });
        Self { dir, address, child }
    }

    /// Pushes an OCI archive to `<address>/<repository>` with skopeo.
    pub fn push_oci_archive(&self, archive: &Path, repository: &str) {
        let output = Command::new(binaries::host("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repository}", self.address))
            .output()
            .expect("run skopeo (install skopeo)");
        assert!(
            output.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
