//! runc's command line, as go-runc (containerd's runc shim) and people call it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// berth-runc: berth's OCI runtime with runc's command line.
#[derive(Debug, Parser)]
#[command(name = "berth-runc", version, disable_version_flag = true)]
pub struct Cli {
    /// Where container state is kept.
    #[arg(long, global = true, default_value = berth_runtime::container::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Append log lines (errors) to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log line format.
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Cgroup paths are systemd `slice:prefix:name` (mapped onto cgroupfs).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Log each step of the operation, the container's init included.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Accepted for runc compatibility (checkpointing is not offered).
    #[arg(long, global = true)]
    pub criu: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time level msg`.
    Text,
    /// `{"level":..,"msg":..,"time":..}` (go-runc reads the last error line).
    Json,
}

/// Options shared by create and run.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle directory.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the init's pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Send the terminal master here.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Move the rootfs onto / and chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a session keyring (berth never does).
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Container id.
    pub id: String,
}

/// `exec`'s flags, as runc takes them.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The process as JSON (an OCI `process` object); the flags below
    /// build one from the container's otherwise.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once the process runs instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid here.
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Send the terminal master here.
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run the process in a paused container too (it starts on resume).
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variables (NAME=value).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Extra group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Extra capabilities.
    #[arg(short = 'c', long = "cap")]
    pub caps: Vec<String>,
    /// Set no_new_privileges.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Pass descriptors 3..3+N to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// SELinux label (applied where the host has SELinux).
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// AppArmor profile (applied where the host has AppArmor).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Container id.
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The top level's help, in the layout tools written for runc read.
const HELP: &str = "NAME:\n   {bin} - Open Container Initiative runtime\n\n{about}\n\nUSAGE:\n   {usage}\n\nCOMMANDS:\n{subcommands}\n\nGLOBAL OPTIONS:\n{options}\n";

/// Each command's help, likewise (`{program}` is the binary's name,
/// `{command}` the command's).
const COMMAND_HELP: &str = "NAME:\n   {program} {command} - {about}\n\nUSAGE:\n   {usage}\n\nOPTIONS:\n{options}\n";

/// Global options that take a value as the next argument.
const GLOBAL_VALUE_OPTIONS: [&str; 4] = ["--root", "--log", "--log-format", "--criu"];

/// The command line's definition, with runc's help layout.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    let program = std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "berth-runc".to_string());
    Cli::command().help_template(HELP).mut_subcommands(|command| {
        let help = COMMAND_HELP
            .replace("{program}", &program)
            .replace("{command}", command.get_name());
        command.help_template(help)
    })
}

/// For `berth-runc foo -h` with no command `foo`: the message runc gives.
pub fn missing_help_topic(args: &[String]) -> Option<String> {
    let mut position = 1;
    while let Some(arg) = args.get(position) {
        if !arg.starts_with('-') {
            break;
        }
        position += if GLOBAL_VALUE_OPTIONS.contains(&arg.as_str()) {
            2
        } else {
            1
        };
    }
    let (topic, rest) = args.get(position..)?.split_first()?;
    if !rest.iter().any(|a| a == "-h" || a == "--help") {
        return None;
    }
    let command = command();
    let known = command
        .get_subcommands()
        .any(|c| c.get_name() == topic || c.get_all_aliases().any(|a| a == topic));
    (!known && topic != "help").then(|| format!("No help topic for '{topic}'"))
}

/// `update`'s flags, as runc takes them: a LinuxResources file, or the
/// limits one by one (sizes as `50M`, `1g` or bytes; -1 for none).
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A LinuxResources JSON file, or - for standard input (the flags
    /// below are then ignored).
    #[arg(short, long)]
    pub resources: Option<String>,
    /// Block IO weight (10-1000).
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period, in microseconds.
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota, in microseconds (-1 for none).
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS burst, in microseconds.
    #[arg(long = "cpu-burst")]
    pub cpu_burst: Option<u64>,
    /// CPU realtime period, in microseconds.
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime, in microseconds.
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPUs to use (`0-2,4`).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// SCHED_IDLE for the cgroup (0 or 1).
    #[arg(long = "cpu-idle", allow_hyphen_values = true)]
    pub cpu_idle: Option<i64>,
    /// Memory limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit (ignored by current kernels).
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer limit.
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Process limit (-1 for none).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not offered).
    #[arg(long = "l3-cache-schema")]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not offered).
    #[arg(long = "mem-bw-schema")]
    pub mem_bw_schema: Option<String>,
    /// Container id.
    pub id: String,
}

/// Output formats of list and ps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table.
    Table,
    /// JSON.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container and leave it waiting for start.
    Create {
        #[command(flatten)]
        args: CreateArgs,
        /// Accepted for runc compatibility.
        #[arg(short, long)]
        detach: bool,
    },
    /// Run a process in a running container.
    Exec(Box<ExecArgs>),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create and start a container, and wait for it unless detached.
    Run {
        #[command(flatten)]
        args: CreateArgs,
        /// Return once the container runs.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to a container's init (or to all its processes).
    Kill {
        /// Signal every process in the container.
        #[arg(short, long)]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        /// Kill it first if it still runs.
        #[arg(short, long)]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Freeze a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Change a running container's resource limits.
    Update(Box<UpdateArgs>),
    /// List containers.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List a container's processes.
    Ps {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Container id.
        id: String,
        /// Options for ps(1) in the table format (default `-ef`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Print a container's resource usage as JSON events, and its OOM
    /// kills, until it is gone.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// How often to print stats (`5s`, `100ms`, `1m`).
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Container id.
        id: String,
    },
    /// Checkpoint a running container (not offered by berth-runc).
    Checkpoint {
        /// runc's checkpoint options and the container id.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Restore a container from a checkpoint (not offered by berth-runc).
    Restore {
        /// runc's restore options and the container id.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a default config.json.
    Spec {
        /// Where to write it.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print what this runtime supports, as JSON.
    Features,
}
