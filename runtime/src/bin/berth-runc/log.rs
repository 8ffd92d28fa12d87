//! Reporting errors where runc does: standard error, and the `--log` file
//! (go-runc reads the last `"level":"error"` line of a JSON log as the
//! error).

use std::io::Write as _;

use crate::args::{Cli, LogFormat};

/// Reports a failed command.
pub fn error(cli: &Cli, error: &berth_runtime::Error) {
    let message = error.to_string();
    let _ = writeln!(std::io::stderr(), "berth-runc: {message}");
    let Some(path) = &cli.log else { return };
    let time = berth_runtime::state::now_rfc3339();
    let line = match cli.log_format {
        LogFormat::Json => serde_json::json!({"level": "error", "msg": message, "time": time}).to_string(),
        LogFormat::Text => format!("time=\"{time}\" level=error msg={message:?}"),
    };
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}
