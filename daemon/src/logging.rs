//! Logging setup: `--log-level` (or `[debug] level`) picks what is shown;
//! `RUST_LOG`, when set, refines it per module.

use berth_core::{Error, Result};
use tracing::Level;

/// Parses a level name as containerd accepts them.
pub fn parse_level(level: &str) -> Result<Level> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Ok(Level::TRACE),
        "debug" => Ok(Level::DEBUG),
        "info" => Ok(Level::INFO),
        "warn" | "warning" => Ok(Level::WARN),
        "error" | "fatal" | "panic" => Ok(Level::ERROR),
        _ => Err(Error::invalid_argument(format!(
            "log level {level:?} is not one of trace, debug, info, warn, error"
        ))),
    }
}

/// Sends logs to stderr at `level`.
pub fn init(level: Level) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
