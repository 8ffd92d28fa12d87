//! berthd: the berth daemon. Serves the containerd v1 gRPC API on a Unix
//! socket so `ctr` and any containerd client can use it unchanged.

mod any_authority;
mod config;
mod connection_limit;
mod deadline;
mod grpc_metrics;
mod instance_lock;
mod logging;
mod metrics_server;
mod plugins;
mod process_metrics;
mod request_span;
mod server;
mod task_metrics;
mod tcp_tls;
mod write_through;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// The berth container daemon.
#[derive(Debug, Parser)]
#[command(name = "berthd", version = berth_services::version::VERSION_LINE, about)]
struct Cli {
    /// Persistent data directory (metadata, content, snapshots).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Per-boot state directory (bundles, shim sockets).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// gRPC Unix socket to serve on.
    #[arg(short, long, value_name = "PATH")]
    address: Option<PathBuf>,
    /// Configuration file.
    #[arg(short, long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// trace, debug, info, warn or error.
    #[arg(short, long, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration.
    Default,
    /// Print the configuration berthd would run with (file and flags applied).
    Dump,
}

/// The config file's settings with the command line's overrides applied.
fn effective_config(cli: &Cli, config_given: bool) -> berth_core::Result<Config> {
    let mut config = Config::load(&cli.config, config_given)?;
    if let Some(root) = &cli.root {
        config.root = root.clone();
    }
    if let Some(state) = &cli.state {
        config.state = state.clone();
    }
    if let Some(address) = &cli.address {
        config.grpc.address = address.clone();
    }
    if let Some(level) = &cli.log_level {
        config.debug.level = level.clone();
    }
    // Flags are checked like the file is.
    Config::parse(&toml::to_string(&config).map_err(|e| berth_core::Error::internal(e.to_string()))?)
}

/// Lifts the soft limit on open files to the hard one (which needs no
/// privilege): every container, shim connection, API client and open
/// layer costs descriptors, and the default soft limit (1024) is soon
/// reached on a busy host.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open file limit"),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let config_given = matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };

    if let Some(Command::Config { command }) = &cli.command {
        match command {
            ConfigCommand::Default => {
                print!("{}", Config::default_toml(plugins::registry().default_configs()));
                return ExitCode::SUCCESS;
            }
            ConfigCommand::Dump => {
                return match effective_config(&cli, config_given) {
                    Ok(config) => {
                        let mut config = config;
                        let mut sections = plugins::registry().default_configs();
                        for (key, value) in std::mem::take(&mut config.plugins) {
                            sections.insert(key, value);
                        }
                        config.plugins = sections;
                        print!("{}", toml::to_string_pretty(&config).unwrap_or_default());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("berthd: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
        }
    }

    let config = match effective_config(&cli, config_given) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let level = match logging::parse_level(&config.debug.level) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(level);
    raise_open_file_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berthd")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berthd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The log goes to stderr: one line says why.
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
