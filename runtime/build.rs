//! Records the source revision berth-runc is built from, for `--version`'s
//! `commit:` line.

// Build scripts talk to cargo on stdout.
#![allow(clippy::print_stdout)]

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BERTH_REVISION={revision}");
    // Only a new commit changes it: edits to the work tree do not rebuild
    // the runtime (and all that depends on it) for the sake of one line.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/refs/heads");
    }
}
