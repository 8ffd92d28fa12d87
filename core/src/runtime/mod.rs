//! The runtime manager (plugin `io.containerd.runtime.v2.task`): one shim
//! process per task, launched with containerd's runtime v2 protocol and
//! driven over ttrpc.
//!
//! Creating a task makes its bundle ([`bundle`]), runs `<shim> ... start`
//! in it, dials the address the shim prints and sends it `Create`. Shims
//! report task events on the daemon's ttrpc socket. Runtime names map to
//! shim binaries: `io.containerd.runc.v2` and `io.containerd.berth.v2` to
//! berth's own shim unless the configuration says otherwise, any other
//! `a.b.<name>.<version>` to `containerd-shim-<name>-<version>` on PATH.

pub mod bundle;
pub mod protocol;
mod recovery;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::containerd::task::v2::task_ttrpc::TaskClient;
use berth_api::containerd::task::v2::{CreateTaskRequest, DeleteRequest, ShutdownRequest};
use berth_api::ttrpc::{CallOptions, Client};
use prost::Message as _;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::events::Exchange;
use crate::metadata::MetadataStore;
use crate::plugin::{Instance, Registration, types};
pub use bundle::Bundle;

/// The metadata key shims read the namespace from.
pub const NAMESPACE_KEY: &str = "containerd-namespace-ttrpc";

/// berth's shim binary.
pub const BERTH_SHIM: &str = "containerd-shim-berth-v2";

/// How long a shim may take to answer a call that changes state.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The plugin's configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Runtime name → shim binary (a name on PATH or an absolute path).
    pub runtimes: HashMap<String, String>,
}

/// What a task is created from.
#[derive(Clone, Debug, Default)]
pub struct TaskSpec {
    /// The container's runtime name.
    pub runtime: String,
    /// Runtime options (e.g. `containerd.runc.v1.Options`).
    pub options: Option<prost_types::Any>,
    /// The container's OCI spec, as JSON.
    pub spec_json: Vec<u8>,
    /// The rootfs mounts.
    pub rootfs: Vec<berth_api::containerd::types::Mount>,
    /// stdio URIs.
    pub stdin: String,
    /// stdout URI.
    pub stdout: String,
    /// stderr URI.
    pub stderr: String,
    /// Whether the task has a terminal.
    pub terminal: bool,
}

/// A running shim and its task.
#[derive(Clone, Debug)]
pub struct Shim {
    /// The ttrpc client.
    pub client: TaskClient,
    /// The namespace.
    pub namespace: String,
    /// The task (container) id.
    pub id: String,
    /// The bundle.
    pub bundle: Bundle,
    /// The shim binary.
    pub binary: PathBuf,
    /// The task's init pid.
    pub pid: u32,
    /// Whether the shim speaks a protocol this daemon does not know (it is
    /// left alone).
    pub refused: bool,
}

impl Shim {
    /// A shim reached over `client`, its task's pid not known yet.
    pub fn new(client: Client, namespace: &str, id: &str, bundle: &Bundle, binary: &Path) -> Self {
        Self {
            client: TaskClient::new(client),
            namespace: namespace.to_string(),
            id: id.to_string(),
            bundle: bundle.clone(),
            binary: binary.to_path_buf(),
            pid: 0,
            refused: false,
        }
    }

    /// Call options carrying the namespace.
    pub fn options(&self) -> CallOptions {
        CallOptions::with_metadata(NAMESPACE_KEY, self.namespace.clone()).timeout(CALL_TIMEOUT)
    }

    /// Asks the shim to exit (`now`: even with a task left); errors are
    /// ignored, as a shim that is gone needs no asking.
    pub async fn shutdown(&self, now: bool) {
        let request = ShutdownRequest {
            id: self.id.clone(),
            now,
        };
        let _ = self.client.shutdown(&self.options(), &request).await;
    }

    /// Call options for a call that may block as long as it likes (Wait).
    pub fn waiting_options(&self) -> CallOptions {
        CallOptions::with_metadata(NAMESPACE_KEY, self.namespace.clone())
    }
}

/// Every task's shim.
#[derive(Debug)]
pub struct RuntimeManager {
    state: PathBuf,
    root: PathBuf,
    grpc_address: PathBuf,
    ttrpc_address: PathBuf,
    config: RuntimeConfig,
    tasks: Mutex<HashMap<(String, String), Shim>>,
    /// Where the exits of tasks whose shim died are published.
    events: Option<Arc<Exchange>>,
    /// Containers, to drop tasks whose container is gone at recovery.
    meta: Option<MetadataStore>,
}

impl RuntimeManager {
    /// A manager keeping bundles under `state` and work dirs under `root`.
    pub fn new(
        state: PathBuf,
        root: PathBuf,
        grpc_address: PathBuf,
        ttrpc_address: PathBuf,
        config: RuntimeConfig,
    ) -> Self {
        Self {
            state,
            root,
            grpc_address,
            ttrpc_address,
            config,
            tasks: Mutex::new(HashMap::new()),
            events: None,
            meta: None,
        }
    }

    /// The same manager publishing dead tasks' exits on `events` and
    /// checking containers in `meta`.
    pub fn with_services(mut self, events: Arc<Exchange>, meta: MetadataStore) -> Self {
        self.events = Some(events);
        self.meta = Some(meta);
        self
    }

    /// The shim of task `id`, if it has one.
    pub fn get(&self, namespace: &str, id: &str) -> Option<Shim> {
        self.lock().get(&(namespace.to_string(), id.to_string())).cloned()
    }

    /// Every task of `namespace`.
    pub fn list(&self, namespace: &str) -> Vec<Shim> {
        let mut shims: Vec<Shim> = self
            .lock()
            .values()
            .filter(|s| s.namespace == namespace)
            .cloned()
            .collect();
        shims.sort_by(|a, b| a.id.cmp(&b.id));
        shims
    }

    /// Every task of every namespace (the metrics endpoint's scrape).
    pub fn list_all(&self) -> Vec<Shim> {
        let mut shims: Vec<Shim> = self.lock().values().cloned().collect();
        shims.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        shims
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Shim>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shim binary for a runtime name.
    pub fn shim_binary(&self, runtime: &str) -> Result<PathBuf> {
        let name = match self.config.runtimes.get(runtime) {
            Some(binary) => binary.clone(),
            None if runtime == "io.containerd.runc.v2" || runtime == "io.containerd.berth.v2" => BERTH_SHIM.to_string(),
            None => {
                let parts: Vec<&str> = runtime.split('.').collect();
                match parts.as_slice() {
                    [.., name, version] if !name.is_empty() && !version.is_empty() => {
                        format!("containerd-shim-{name}-{version}")
                    }
                    _ => {
                        return Err(Error::invalid_argument(format!(
                            "runtime {runtime:?}: not a runtime name"
                        )));
                    }
                }
            }
        };
        find_binary(&name)
            .ok_or_else(|| Error::not_found(format!("runtime {runtime:?}: shim binary {name:?} not found")))
    }

    /// Starts a shim for task `id` and creates the task in it.
    pub async fn create(self: &Arc<Self>, namespace: &str, id: &str, task: TaskSpec) -> Result<Shim> {
        let binary = self.shim_binary(&task.runtime)?;
        let bundle = Bundle::at(&self.state, &self.root, namespace, id);
        bundle.create(&task.spec_json)?;
        bundle.drain_log(namespace, id);
        match self.start_shim(namespace, id, &bundle, &binary, &task).await {
            Ok(shim) => {
                self.adopt(shim.clone());
                Ok(shim)
            }
            Err(e) => {
                bundle.remove();
                Err(e)
            }
        }
    }

    async fn start_shim(
        &self,
        namespace: &str,
        id: &str,
        bundle: &Bundle,
        binary: &Path,
        task: &TaskSpec,
    ) -> Result<Shim> {
        // Recorded first: a daemon that dies once the shim runs finds, at
        // its restart, which binary cleans up after it.
        std::fs::write(
            bundle.dir.join("shim-binary-path"),
            binary.as_os_str().as_encoded_bytes(),
        )
        .map_err(|e| Error::io("recording the shim binary", &e))?;
        let address = self
            .run_shim_command(namespace, id, bundle, binary, "start", task.options.as_ref())
            .await?;
        let address = String::from_utf8_lossy(&address).trim().to_string();
        crate::failpoint::check("runtime.after-shim-start")?;
        let client = match connect(&address).await {
            Ok(client) => client,
            Err(e) => {
                // Started but unreachable: it must not linger.
                kill_shim_recorded_in(bundle);
                let _ = self
                    .run_shim_command(namespace, id, bundle, binary, "delete", None)
                    .await;
                return Err(Error::unavailable(format!(
                    "task {id}: dialing the shim at {address}: {e}"
                )));
            }
        };
        let mut shim = Shim::new(client, namespace, id, bundle, binary);
        let request = CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.dir.display().to_string(),
            rootfs: task.rootfs.clone(),
            terminal: task.terminal,
            stdin: task.stdin.clone(),
            stdout: task.stdout.clone(),
            stderr: task.stderr.clone(),
            options: task.options.clone(),
            ..CreateTaskRequest::default()
        };
        match shim.client.create(&shim.options(), &request).await {
            Ok(created) => {
                shim.pid = created.pid;
                crate::failpoint::check("runtime.after-task-create")?;
                Ok(shim)
            }
            Err(status) => {
                shim.shutdown(true).await;
                let _ = self
                    .run_shim_command(namespace, id, bundle, binary, "delete", None)
                    .await;
                Err(Error::from_status(&status))
            }
        }
    }

    /// Runs `<shim> <flags> <command>` in the bundle; its stdout.
    async fn run_shim_command(
        &self,
        namespace: &str,
        id: &str,
        bundle: &Bundle,
        binary: &Path,
        command: &str,
        options: Option<&prost_types::Any>,
    ) -> Result<Vec<u8>> {
        let daemon = std::env::current_exe().unwrap_or_default();
        let mut child = tokio::process::Command::new(binary)
            .arg("-namespace")
            .arg(namespace)
            .arg("-address")
            .arg(&self.grpc_address)
            .arg("-publish-binary")
            .arg(daemon)
            .arg("-id")
            .arg(id)
            .args(if command == "delete" {
                vec!["-bundle".to_string(), bundle.dir.display().to_string()]
            } else {
                Vec::new()
            })
            .arg(command)
            .current_dir(&bundle.dir)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("GRPC_ADDRESS", &self.grpc_address)
            .env("NAMESPACE", namespace)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("running {} {command}", binary.display()), &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            let payload = options.map(|o| o.encode_to_vec()).unwrap_or_default();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &payload).await;
        }
        let output = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| Error::unavailable(format!("{} {command}: timed out", binary.display())))?
            .map_err(|e| Error::io(format!("running {} {command}", binary.display()), &e))?;
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr).trim().to_string();
            let text = if text.is_empty() {
                String::from_utf8_lossy(&output.stdout).trim().to_string()
            } else {
                text
            };
            return Err(Error::internal(format!("{} {command}: {text}", binary.display())));
        }
        Ok(output.stdout)
    }

    /// Deletes task `id` in its shim, stops the shim and removes the bundle.
    pub async fn delete(&self, namespace: &str, id: &str) -> Result<berth_api::containerd::task::v2::DeleteResponse> {
        let shim = self
            .get(namespace, id)
            .ok_or_else(|| Error::not_found(format!("task {id}")))?;
        let deleted = shim
            .client
            .delete(
                &shim.options(),
                &DeleteRequest {
                    id: id.to_string(),
                    exec_id: String::new(),
                },
            )
            .await
            .map_err(|s| Error::from_status(&s))?;
        // No longer registered, the closing connection is no shim death.
        self.lock().remove(&(namespace.to_string(), id.to_string()));
        shim.shutdown(false).await;
        shim.bundle.remove();
        Ok(deleted)
    }
}

/// SIGKILLs the shim whose pid the bundle records (`shim.pid`, written by
/// the shim's `start`), if that process is still a shim of this bundle.
fn kill_shim_recorded_in(bundle: &Bundle) {
    let Some(pid) = std::fs::read_to_string(bundle.dir.join("shim.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let bundle_arg = bundle.dir.as_os_str().as_encoded_bytes();
    if cmdline.split(|b| *b == 0).any(|arg| arg == bundle_arg) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A binary by name: next to the daemon's own, else on PATH; a path as is.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    if path.is_absolute() {
        return path.is_file().then(|| path.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    if let Some(candidate) = beside.filter(|c| c.is_file()) {
        return Some(candidate);
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Dials a shim's printed address: `unix://<path>`, or an abstract name.
async fn connect(address: &str) -> std::io::Result<Client> {
    match address.strip_prefix("unix://") {
        Some(path) => Client::connect(path).await,
        None if address.starts_with('/') && Path::new(address).exists() => Client::connect(address).await,
        None => Client::connect_abstract(address.trim_start_matches('\0').as_bytes()).await,
    }
}

/// `io.containerd.runtime.v2.task`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::RUNTIME_V2,
        id: "task",
        requires: &[types::EVENT, types::METADATA],
        default_config: Some(|| toml::toml! { [runtimes] }),
        init: Box::new(|ctx| {
            Box::pin(async move {
                let config: RuntimeConfig = ctx.config()?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let daemon = &ctx.daemon;
                let manager = Arc::new(
                    RuntimeManager::new(
                        daemon.state.join("tasks"),
                        daemon.root.join("tasks"),
                        daemon.grpc_address.clone(),
                        daemon.ttrpc_address.clone(),
                        config,
                    )
                    .with_services(events, (*meta).clone()),
                );
                manager.recover().await;
                Ok(manager as Instance)
            })
        }),
    }
}
