//! OCI hooks: programs the spec names for points of the lifecycle, each
//! given the container's state as JSON on stdin.
//!
//! | hook            | runs in                          | when                          | on failure        |
//! |-----------------|----------------------------------|-------------------------------|-------------------|
//! | prestart        | runtime's namespaces             | create, before pivot_root     | create fails      |
//! | createRuntime   | runtime's namespaces             | create, before pivot_root     | create fails      |
//! | createContainer | container's namespaces, host fs  | create, before pivot_root     | create fails      |
//! | startContainer  | container, its own root          | start, before the user's exec | start fails       |
//! | poststart       | runtime's namespaces             | after start                   | a warning         |
//! | poststop        | runtime's namespaces             | delete, after removal         | a warning         |

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

use crate::error::{Error, Result};

/// The lifecycle points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Deprecated, runs with createRuntime.
    Prestart,
    /// After the environment is created, in the runtime's namespaces.
    CreateRuntime,
    /// After the environment is created, in the container's namespaces.
    CreateContainer,
    /// Just before the user's process, inside the container.
    StartContainer,
    /// After the user's process started.
    Poststart,
    /// After the container is deleted.
    Poststop,
}

impl Kind {
    /// The spec's field name.
    pub fn field(self) -> &'static str {
        match self {
            Self::Prestart => "prestart",
            Self::CreateRuntime => "createRuntime",
            Self::CreateContainer => "createContainer",
            Self::StartContainer => "startContainer",
            Self::Poststart => "poststart",
            Self::Poststop => "poststop",
        }
    }

    /// Whether the hook's path is resolved on the host when create starts
    /// (startContainer's is resolved inside the container).
    fn on_host(self) -> bool {
        self != Self::StartContainer
    }

    fn hooks(self, spec: &Spec) -> Vec<Hook> {
        let Some(hooks) = spec.hooks().as_ref() else {
            return Vec::new();
        };
        #[allow(deprecated)] // prestart is deprecated in the spec yet still honoured, as runc does
        let list = match self {
            Self::Prestart => hooks.prestart(),
            Self::CreateRuntime => hooks.create_runtime(),
            Self::CreateContainer => hooks.create_container(),
            Self::StartContainer => hooks.start_container(),
            Self::Poststart => hooks.poststart(),
            Self::Poststop => hooks.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

const ALL: [Kind; 6] = [
    Kind::Prestart,
    Kind::CreateRuntime,
    Kind::CreateContainer,
    Kind::StartContainer,
    Kind::Poststart,
    Kind::Poststop,
];

/// The state a hook reads on stdin (the runtime spec's state).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState {
    /// The spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: String,
    /// The init's pid (0 once stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The spec's annotations.
    pub annotations: std::collections::HashMap<String, String>,
}

impl HookState {
    /// The state of container `id` built from `spec` in `bundle`.
    pub fn new(spec: &Spec, id: &str, status: &str, pid: Option<i32>, bundle: &Path) -> Self {
        Self {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status: status.to_string(),
            pid,
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }
    }
}

/// Whether the spec has hooks of `kind`.
pub fn has(kind: Kind, spec: &Spec) -> bool {
    !kind.hooks(spec).is_empty()
}

/// Checks every hook before anything is made: an absolute path, and for
/// the hooks that run from the host, an executable file there.
pub fn check(spec: &Spec) -> Result<()> {
    for kind in ALL {
        for (i, hook) in kind.hooks(spec).iter().enumerate() {
            let field = format!("hooks.{}[{i}].path", kind.field());
            let path = hook.path();
            if !path.is_absolute() {
                return Err(Error::invalid(
                    field,
                    format!("{} is not an absolute path", path.display()),
                ));
            }
            if kind.on_host() && !path.is_file() {
                return Err(Error::invalid(field, format!("{} does not exist", path.display())));
            }
            if hook.timeout().is_some_and(|t| t <= 0) {
                return Err(Error::invalid(
                    format!("hooks.{}[{i}].timeout", kind.field()),
                    "must be a positive number of seconds",
                ));
            }
        }
    }
    Ok(())
}

/// The environment a hook runs with: its own `env`; a startContainer hook
/// without one gets the container process's (it runs in the container, as
/// the process is about to, and runc has always given it that one).
fn environment(kind: Kind, hook: &Hook, spec: &Spec) -> Vec<String> {
    match (kind, hook.env()) {
        (_, Some(env)) => env.clone(),
        (Kind::StartContainer, None) => spec
            .process()
            .as_ref()
            .map(crate::process::environment)
            .unwrap_or_default(),
        (_, None) => Vec::new(),
    }
}

/// Runs one hook to completion; an error names it.
fn run_one(hook: &Hook, env: &[String], field: &str, state: &[u8]) -> Result<()> {
    let path = hook.path();
    let args = hook.args().clone().unwrap_or_default();
    let mut command = Command::new(path);
    if let Some((first, rest)) = args.split_first() {
        // args[0] is the program's own name, as execv takes it.
        std::os::unix::process::CommandExt::arg0(&mut command, first);
        command.args(rest);
    }
    command
        .env_clear()
        .envs(env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| Error::io(format!("running {field}"), path, &e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is no error.
        let _ = stdin.write_all(state);
    }
    // Read stderr while the hook runs, so a talkative one never blocks.
    let stderr_reader = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    });
    let deadline = hook.timeout().map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("waiting for {field}"), path, &e)),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::other(
                format!("running {field}"),
                format!("{} timed out after {}s", path.display(), hook.timeout().unwrap_or(0)),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let stderr = stderr_reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Err(Error::other(
        format!("running {field}"),
        format!("{} failed ({status}): {}", path.display(), stderr.trim()),
    ))
}

/// Runs the hooks of `kind` in order; the first failure stops them.
pub fn run(kind: Kind, spec: &Spec, state: &HookState) -> Result<()> {
    let hooks = kind.hooks(spec);
    if hooks.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(state).map_err(|e| Error::other("encoding the hook state", e.to_string()))?;
    for (i, hook) in hooks.iter().enumerate() {
        run_one(
            hook,
            &environment(kind, hook, spec),
            &format!("hooks.{}[{i}]", kind.field()),
            &json,
        )?;
    }
    Ok(())
}

/// Runs hooks whose failure is only reported (poststart, poststop): every
/// one runs; the failures come back as warnings.
pub fn run_all(kind: Kind, spec: &Spec, state: &HookState) -> Vec<Error> {
    let Ok(json) = serde_json::to_vec(state) else {
        return Vec::new();
    };
    kind.hooks(spec)
        .iter()
        .enumerate()
        .filter_map(|(i, hook)| {
            run_one(
                hook,
                &environment(kind, hook, spec),
                &format!("hooks.{}[{i}]", kind.field()),
                &json,
            )
            .err()
        })
        .collect()
}
