//! Reporting errors where runc does: standard error, and the `--log` file
//! (go-runc reads the last `"level":"error"` line of a JSON log as the
//! error). With `--debug`, each step of an operation too: to the `--log`
//! file when there is one, to standard error otherwise.

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
    if let Some((Some(path), format)) = DESTINATION.get() {
        append(path, &formatted(*format, level, message));
    }
}

/// One log line as runc writes it, in either format.
fn formatted(format: LogFormat, level: &str, message: &str) -> String {
    let time = berth_runtime::state::now_rfc3339();
    match format {
        LogFormat::Json => serde_json::json!({"level": level, "msg": message, "time": time}).to_string(),
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={message:?}"),
    }
}

fn append(path: &std::path::Path, line: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

/// Reports one step of an operation (`--debug`).
pub fn debug(message: &str) {
    match DESTINATION.get() {
        Some((Some(path), format)) => append(path, &formatted(*format, "debug", message)),
        Some((None, format)) => {
            let _ = writeln!(std::io::stderr(), "{}", formatted(*format, "debug", message));
        }
        None => {}
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
