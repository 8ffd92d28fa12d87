//! The shim's command line, as containerd passes it: Go-style flags
//! (`-namespace ns`, `-id x`, `-debug`) and one command, `start` or
//! `delete`; none means serving (the daemonised shim).

use std::path::PathBuf;

/// What the shim was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a shim for a container and print its address.
    Start,
    /// Clean up after a shim that is gone.
    Delete,
}

/// The parsed flags.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// The container's namespace.
    pub namespace: String,
    /// The daemon's gRPC socket.
    pub address: String,
    /// The daemon binary (for the old publish path; unused).
    pub publish_binary: String,
    /// The container id.
    pub id: String,
    /// The bundle (defaults to the working directory).
    pub bundle: PathBuf,
    /// Verbose logging.
    pub debug: bool,
    /// The command; none: serve the task API (the process `start` leaves
    /// running).
    pub action: Option<Action>,
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut out = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let flag = arg.trim_start_matches('-');
        if arg.starts_with('-') {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            };
            if name == "debug" {
                out.debug = inline.is_none_or(|v| v != "false");
                continue;
            }
            if name == "v" || name == "version" {
                let _ = std::io::Write::write_all(
                    &mut std::io::stdout(),
                    format!("containerd-shim-berth-v2 {}\n", env!("CARGO_PKG_VERSION")).as_bytes(),
                );
                std::process::exit(0);
            }
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("flag -{name} needs a value"))?,
            };
            match name.as_str() {
                "namespace" => out.namespace = value,
                "address" => out.address = value,
                "publish-binary" => out.publish_binary = value,
                "id" => out.id = value,
                "bundle" => out.bundle = PathBuf::from(value),
                // Flags of newer daemons this shim does not need.
                "debug-socket" | "socket" => {}
                other => return Err(format!("unknown flag -{other}")),
            }
            continue;
        }
        out.action = Some(match arg.as_str() {
            "start" => Action::Start,
            "delete" => Action::Delete,
            other => return Err(format!("unknown command {other:?}")),
        });
    }
    if out.bundle.as_os_str().is_empty() {
        out.bundle = std::env::current_dir().map_err(|e| format!("working directory: {e}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerds_command_lines_parse() {
        let args = parse(
            [
                "-namespace",
                "default",
                "-address",
                "/run/c.sock",
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                "c1",
                "-debug",
                "start",
            ]
            .map(String::from),
        )
        .unwrap();
        assert_eq!(args.namespace, "default");
        assert_eq!(args.id, "c1");
        assert!(args.debug);
        assert_eq!(args.action, Some(Action::Start));
        let args = parse(["-namespace=ns", "-id=x", "-bundle", "/b", "delete"].map(String::from)).unwrap();
        assert_eq!(args.bundle, PathBuf::from("/b"));
        assert_eq!(args.action, Some(Action::Delete));
        assert!(parse(["-bogus", "1"].map(String::from)).is_err());
    }
}
