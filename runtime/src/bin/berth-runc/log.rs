//! Reporting errors where runc does: standard error, and the `--log` file
//! (go-runc reads the last `"level":"error"` line of a JSON log as the
//! error).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::args::{Cli, LogFormat};

/// Where `--log` and `--log-format` send lines, once the command line is read.
static DESTINATION: OnceLock<(Option<PathBuf>, LogFormat)> = OnceLock::new();

/// Remembers the command line's log settings.
pub fn configure(cli: &Cli) {
    let _ = DESTINATION.set((cli.log.clone(), cli.log_format));
}

fn write(level: &str, message: &str) {
    write_as(level, message, true);
}

fn write_as(level: &str, message: &str, prefixed: bool) {
    let prefix = if prefixed { "berth-runc: " } else { "" };
    let _ = writeln!(std::io::stderr(), "{prefix}{message}");
    let Some((Some(path), format)) = DESTINATION.get() else {
        return;
    };
    let time = berth_runtime::state::now_rfc3339();
    let line = match format {
        LogFormat::Json => serde_json::json!({"level": level, "msg": message, "time": time}).to_string(),
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={message:?}"),
    };
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// Reports a failed command.
pub fn error(error: &berth_runtime::Error) {
    // A failed exec is the process's own message, shown as runc's init
    // shows it: nothing in front.
    let prefixed = error.kind != berth_runtime::error::Kind::Exec;
    write_as("error", &error.to_string(), prefixed);
}

/// Reports something that went wrong without failing the command (a
/// poststart or poststop hook, say).
pub fn warning(warning: &berth_runtime::Error) {
    write("warning", &warning.to_string());
}
