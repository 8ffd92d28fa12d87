//! berth-runc: berth's runtime with runc's command line, so anything built
//! for runc (containerd's runc shim among them) can use it.

mod args;
mod commands;
mod exec_command;
mod foreground_terminal;
mod log;

use clap::Parser as _;

fn main() {
    // A container's init is this binary run again: become it if so.
    berth_runtime::init::run_if_init();
    let cli = args::Cli::parse();
    log::configure(&cli);
    let code = match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            log::error(&e);
            1
        }
    };
    std::process::exit(code);
}
