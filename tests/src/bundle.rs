//! OCI bundles for runtime tests: the busybox image's root filesystem and
//! the config `berth-runc spec` writes, adjusted per test.

use std::path::{Path, PathBuf};

use crate::binaries;

/// A bundle in a temporary directory.
#[derive(Debug)]
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// The busybox rootfs with `berth-runc spec`'s config, not a terminal,
    /// running `args`.
    pub fn busybox(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle")
            .tempdir()
            .expect("bundle dir");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).expect("rootfs dir");
        unpack_busybox(&rootfs);
        let status = std::process::Command::new(binaries::berth("berth-runc"))
            .arg("spec")
            .arg("--bundle")
            .arg(dir.path())
            .status()
            .expect("berth-runc spec");
        assert!(status.success(), "berth-runc spec failed");
        let bundle = Self { dir };
        bundle.edit(|config| {
            config["process"]["terminal"] = false.into();
            config["process"]["args"] = serde_json::json!(args);
        });
        bundle
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Adds a user namespace with these id maps to the spec.
    pub fn with_user_namespace(&self, uids: serde_json::Value, gids: serde_json::Value) {
        self.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .expect("linux.namespaces")
                .push(serde_json::json!({"type": "user"}));
            c["linux"]["uidMappings"] = uids;
            c["linux"]["gidMappings"] = gids;
        });
    }

    /// Adds a capability to the process's bounding, permitted and
    /// effective sets.
    pub fn add_capability(&self, name: &str) {
        self.edit(|c| {
            for set in ["bounding", "permitted", "effective"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .expect("process.capabilities")
                    .push(name.into());
            }
        });
    }

    /// Changes config.json.
    pub fn edit(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("config.json")).expect("config json");
        change(&mut config);
        std::fs::write(&path, serde_json::to_string_pretty(&config).expect("json")).expect("write config.json");
    }
}

/// Unpacks the busybox fixture's layer into `rootfs`.
fn unpack_busybox(rootfs: &Path) {
    let image = crate::images::busybox();
    let mut archive = tar::Archive::new(std::fs::File::open(&image.docker_tar).expect("docker tar"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let is_layer = entry.path().expect("path").to_string_lossy().ends_with("/layer.tar");
        if is_layer {
            let mut layer = tar::Archive::new(&mut entry);
            layer.set_preserve_permissions(true);
            layer.set_preserve_ownerships(true);
            layer.unpack(rootfs).expect("unpack busybox");
            return;
        }
    }
    panic!("no layer in the busybox fixture");
}
