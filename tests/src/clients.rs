//! The other-language gRPC clients under `tests/clients` (Python's
//! grpcio, Node's @grpc/grpc-js), installed by scripts/install-deps.sh.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `tests/clients`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `python/api_check.py` with `args`, to completion.
pub fn python(args: &[&str]) -> Output {
    python_script("api_check.py", args)
}

/// Runs `python/<script>` with `args` in the clients' virtualenv, to
/// completion.
pub fn python_script(script: &str, args: &[&str]) -> Output {
    let python = dir().join("python/.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/install-deps.sh",
        python.display()
    );
    Command::new(python)
        .arg(dir().join("python").join(script))
        .args(args)
        .output()
        .expect("run the Python client")
}

/// Runs the Python client's checks, which must pass; its JSON report.
pub fn python_report(args: &[&str]) -> serde_json::Value {
    let out = python(args);
    assert!(
        out.status.success(),
        "python api_check.py {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client's JSON report")
}
