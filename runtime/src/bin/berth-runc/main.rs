//! berth-runc: berth's runtime with runc's command line, so anything built
//! for runc (containerd's runc shim among them) can use it.

mod args;
mod commands;
mod events_command;
mod exec_command;
mod foreground_terminal;
mod inherited_fds;
mod log;
mod ps_command;
mod update_command;

use clap::FromArgMatches as _;

fn main() {
    // A container's init is this binary run again: become it if so.
    berth_runtime::init::run_if_init();
    let argv: Vec<String> = std::env::args().collect();
    if let Some(message) = args::missing_help_topic(&argv) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{message}");
        std::process::exit(3);
    }
    let cli = args::Cli::from_arg_matches(&args::command().get_matches()).unwrap_or_else(|e| e.exit());
    log::configure(&cli);
    let preserve_fds = match &cli.command {
        Some(args::Command::Create { args, .. } | args::Command::Run { args, .. }) => args.preserve_fds,
        Some(args::Command::Exec(args)) => args.preserve_fds,
        _ => 0,
    };
    inherited_fds::close_on_exec_beyond(inherited_fds::passed_on(preserve_fds));
    let code = match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            log::error(&e);
            // runc's codes: 255 when exec fails (a process's own code can
            // be any of 0-254), 1 for every other command.
            if matches!(cli.command, Some(args::Command::Exec(_))) {
                255
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}
