//! Where the programs under test live.

use std::path::PathBuf;

/// A binary built from this workspace, e.g. `berthd`.
pub fn berth(name: &str) -> PathBuf {
    let dir = match std::env::var_os("BERTH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // Test executables live in target/<profile>/deps.
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace` first (scripts/test.sh does), or set BERTH_BIN_DIR",
        path.display()
    );
    path
}

/// A program from the host, e.g. Debian's `ctr`; fails the test clearly
/// when it is missing, since the suite's install step provides them.
pub fn host(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not installed; run scripts/install-deps.sh (Debian packages containerd, runc, busybox-static, ...)"
    );
}
