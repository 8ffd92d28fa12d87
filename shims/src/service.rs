//! `containerd.task.v2.Task` over berth-runtime, in this process.
//!
//! Runtime calls that fork and wait for their own children (create, exec,
//! start and delete with their hooks) hold the `children` lock, which the
//! reaper also takes before `waitpid(-1)`: it never reaps a child the
//! runtime waits for, and every pid a call starts is recorded before the
//! reaper can see it exit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_api::containerd::events::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIo, TaskPaused, TaskResumed, TaskStart,
};
use berth_api::containerd::task::v2::task_ttrpc::Task;
use berth_api::containerd::task::v2::{
    CloseIoRequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest,
    ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest,
    StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use berth_api::containerd::v1::types::{ProcessInfo, Status as TaskStatus};
use berth_api::ttrpc::RequestContext;
use berth_runtime::container::Globals;
use berth_runtime::container::create::CreateOptions;
use berth_runtime::container::exec::ExecOptions;
use prost_types::Timestamp;
use tokio::sync::watch;
use tonic::Status;

use crate::container_runtime::{Binary, ContainerRuntime, InProcess};
use crate::events::Publisher;
use crate::socket_file::SocketFile;
use crate::stdio;

/// How a process ended.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// Exit code, or 128 + the signal that killed it.
    pub status: u32,
    /// When the shim reaped it.
    pub at: std::time::SystemTime,
}

fn timestamp(time: std::time::SystemTime) -> Timestamp {
    berth_core::timestamps::from_system_time(time)
}

/// One process: the container's init or an exec.
#[derive(Debug)]
struct Process {
    pid: u32,
    started: bool,
    request: stdio::Request,
    stdio: Option<stdio::Stdio>,
    exit: watch::Sender<Option<Exit>>,
    /// An exec's process spec, until it starts.
    spec: Option<oci_spec::runtime::Process>,
}

impl Process {
    fn new(request: stdio::Request) -> Self {
        Self {
            pid: 0,
            started: false,
            request,
            stdio: None,
            exit: watch::channel(None).0,
            spec: None,
        }
    }

    fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }
}

/// The container this shim runs.
#[derive(Debug)]
struct Container {
    id: String,
    bundle: PathBuf,
    rootfs_mounted: bool,
    paused: bool,
    init: Process,
    execs: HashMap<String, Process>,
}

/// What the service shares with the reaper.
#[derive(Debug)]
pub struct Inner {
    /// What runs the container.
    runtime: Mutex<Arc<dyn ContainerRuntime>>,
    /// The namespace (events carry it).
    pub publisher: Publisher,
    /// Held by runtime calls that wait for their own children, and by the reaper.
    pub children: tokio::sync::Mutex<()>,
    container: Mutex<Option<Container>>,
    /// Set when the shim should exit.
    pub shutdown: watch::Sender<bool>,
    /// The socket file to remove when shutting down (none if abstract).
    pub socket_file: Option<SocketFile>,
}

/// The service.
#[derive(Clone, Debug)]
pub struct Shim {
    /// Shared state.
    pub inner: Arc<Inner>,
}

fn runtime_error(e: berth_runtime::Error) -> Status {
    use berth_runtime::error::Kind;
    let message = e.to_string();
    match e.kind {
        Kind::InvalidArgument => Status::invalid_argument(message),
        Kind::NotFound => Status::not_found(message),
        Kind::AlreadyExists => Status::already_exists(message),
        Kind::FailedPrecondition => Status::failed_precondition(message),
        Kind::System => Status::internal(message),
        // containerd passes a failed exec on as Unknown.
        Kind::Exec => Status::unknown(message),
    }
}

fn joined<T>(result: Result<Result<T, Status>, tokio::task::JoinError>) -> Result<T, Status> {
    result.map_err(|e| Status::internal(format!("runtime call failed: {e}")))?
}

impl Shim {
    /// A shim whose runtime keeps its state under `root`.
    pub fn new(root: PathBuf, publisher: Publisher, socket_file: Option<SocketFile>) -> Self {
        let globals = Globals {
            root,
            ..Globals::default()
        };
        Self {
            inner: Arc::new(Inner {
                runtime: Mutex::new(Arc::new(InProcess { globals })),
                publisher,
                children: tokio::sync::Mutex::new(()),
                container: Mutex::new(None),
                shutdown: watch::channel(false).0,
                socket_file,
            }),
        }
    }

    /// The stdio of a process of container `id`: its stdin, stdout and
    /// stderr URIs, and whether it has a terminal.
    fn stdio_request(&self, id: &str, [stdin, stdout, stderr]: [&String; 3], terminal: bool) -> stdio::Request {
        stdio::Request {
            stdin: stdin.clone(),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            terminal,
            namespace: self.inner.publisher.namespace().to_string(),
            id: id.to_string(),
        }
    }

    fn container_runtime(&self) -> Arc<dyn ContainerRuntime> {
        Arc::clone(&self.inner.runtime.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn with_container<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> Result<T, Status>) -> Result<T, Status> {
        let mut guard = self.inner.container.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(container) if container.id == id => f(container),
            _ => Err(Status::not_found(format!("container {id}: not found"))),
        }
    }

    /// Uses the runtime the task's options name: a runc-compatible binary
    /// (`binary_name`), or berth-runtime with another state root.
    fn choose_runtime(&self, options: &berth_api::containerd::runc::v1::Options, bundle: &Path) -> Result<(), Status> {
        let namespace = self.inner.publisher.namespace().to_string();
        let chosen: Arc<dyn ContainerRuntime> = if options.binary_name.is_empty() {
            let mut globals = Globals {
                root: crate::runtime_root(bundle, &namespace),
                ..Globals::default()
            };
            if !options.root.is_empty() {
                globals.root = PathBuf::from(&options.root).join(&namespace);
            }
            globals.systemd_cgroup = options.systemd_cgroup;
            Arc::new(InProcess { globals })
        } else {
            let path = find_program(&options.binary_name).ok_or_else(|| {
                Status::invalid_argument(format!("runtime binary {:?} not found", options.binary_name))
            })?;
            let root = if options.root.is_empty() {
                crate::runtime_root(bundle, &namespace).with_file_name(format!(
                    "{}-{}",
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    namespace
                ))
            } else {
                PathBuf::from(&options.root).join(&namespace)
            };
            let binary = Binary {
                path,
                root,
                systemd_cgroup: options.systemd_cgroup,
                log: bundle.join("log.json"),
            };
            // For the delete command, which gets no options.
            binary
                .record(bundle)
                .map_err(|e| Status::internal(format!("recording the runtime: {e}")))?;
            Arc::new(binary)
        };
        *self.inner.runtime.lock().unwrap_or_else(|p| p.into_inner()) = chosen;
        Ok(())
    }

    /// Runs a runtime call on a blocking thread, holding the children lock
    /// (a runc-compatible binary is a child on every call, and hooks may run
    /// on any: the reaper waits while the call runs).
    async fn runtime<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn ContainerRuntime) -> berth_runtime::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let runtime = self.container_runtime();
        let inner = Arc::clone(&self.inner);
        joined(
            tokio::task::spawn_blocking(move || {
                let _children = inner.children.blocking_lock();
                call(runtime.as_ref()).map_err(runtime_error)
            })
            .await,
        )
    }

    /// Pauses (`pause`) or resumes the container; publishes the change.
    async fn freeze(&self, id: String, pause: bool) -> Result<(), Status> {
        self.with_container(&id, |_| Ok(()))?;
        let target = id.clone();
        self.runtime(move |runtime| {
            if pause {
                runtime.pause(&target)
            } else {
                runtime.resume(&target)
            }
        })
        .await?;
        self.with_container(&id, |c| {
            c.paused = pause;
            Ok(())
        })?;
        if pause {
            self.inner
                .publisher
                .publish("/tasks/paused", &TaskPaused { container_id: id });
        } else {
            self.inner
                .publisher
                .publish("/tasks/resumed", &TaskResumed { container_id: id });
        }
        Ok(())
    }

    fn process_exit(&self, id: &str, exec_id: &str) -> Result<watch::Receiver<Option<Exit>>, Status> {
        self.with_container(id, |c| Ok(c.process(exec_id)?.exit.subscribe()))
    }
}

impl Container {
    /// The init (empty `exec_id`) or an exec.
    fn process(&self, exec_id: &str) -> Result<&Process, Status> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Status::not_found(format!("process {exec_id}: not found")))
    }
}

impl Inner {
    /// Records that `pid` exited with `status`; publishes the exit.
    pub fn reaped(&self, pid: u32, status: u32) {
        let mut guard = self.container.lock().unwrap_or_else(|p| p.into_inner());
        let Some(container) = guard.as_mut() else { return };
        let exit = Exit {
            status,
            at: std::time::SystemTime::now(),
        };
        let (process, exec_id) = if container.init.pid == pid && container.init.exited().is_none() {
            (&mut container.init, container.id.clone())
        } else if let Some((exec_id, process)) = container
            .execs
            .iter_mut()
            .find(|(_, p)| p.pid == pid && p.exited().is_none())
        {
            (process, exec_id.clone())
        } else {
            return;
        };
        process.exit.send_replace(Some(exit));
        self.publisher.publish(
            "/tasks/exit",
            &TaskExit {
                container_id: container.id.clone(),
                id: exec_id,
                pid,
                exit_status: status,
                exited_at: Some(timestamp(exit.at)),
            },
        );
        if container.init.pid == pid {
            container.paused = false;
        }
    }

    /// Whether the shim still holds a container.
    pub fn has_container(&self) -> bool {
        self.container.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// The version `Connect` reports. In a build with failpoints,
/// `BERTH_TEST_SHIM_PROTOCOL` makes the shim claim another protocol, to
/// play a newer daemon's shim; other builds ignore it.
fn advertised_version() -> String {
    let claimed = berth_core::failpoint::ENABLED
        .then(|| std::env::var("BERTH_TEST_SHIM_PROTOCOL").ok())
        .flatten();
    match claimed {
        Some(protocol) => format!("berth {} protocol {protocol}", env!("CARGO_PKG_VERSION")),
        None => berth_core::runtime::protocol::advertised(env!("CARGO_PKG_VERSION")),
    }
}

/// A program by name on PATH, or a path as is.
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Mounts the rootfs the daemon gave into `<bundle>/rootfs`.
fn mount_rootfs(bundle: &Path, mounts: &[berth_api::containerd::types::Mount]) -> Result<bool, Status> {
    if mounts.is_empty() {
        return Ok(false);
    }
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| Status::internal(format!("{}: {e}", rootfs.display())))?;
    for (i, mount) in mounts.iter().enumerate() {
        if let Err(e) = berth_core::mount::mount(mount, &rootfs) {
            let _ = unmount_rootfs(bundle);
            return Err(Status::invalid_argument(format!("rootfs[{i}]: {e}")));
        }
    }
    Ok(true)
}

/// Unmounts `<bundle>/rootfs` (every mount stacked there).
pub fn unmount_rootfs(bundle: &Path) -> Result<(), Status> {
    let rootfs = bundle.join("rootfs");
    loop {
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Status::internal(format!("unmounting {}: {e}", rootfs.display()))),
        }
    }
}

fn parse_process_spec(any: Option<&prost_types::Any>) -> Result<oci_spec::runtime::Process, Status> {
    let any = any.ok_or_else(|| Status::invalid_argument("exec: the process spec is missing"))?;
    let process: oci_spec::runtime::Process =
        serde_json::from_slice(&any.value).map_err(|e| Status::invalid_argument(format!("exec: process spec: {e}")))?;
    // Refused here, before anything is recorded, as well as by the
    // runtime when the process starts.
    berth_runtime::ids::check_user(process.user()).map_err(|e| Status::invalid_argument(format!("exec: {e}")))?;
    Ok(process)
}

fn signal_from(number: u32) -> Result<nix::sys::signal::Signal, Status> {
    nix::sys::signal::Signal::try_from(number as i32)
        .map_err(|_| Status::invalid_argument(format!("signal {number}: unknown")))
}

impl Task for Shim {
    async fn create(&self, _context: RequestContext, request: CreateTaskRequest) -> Result<CreateTaskResponse, Status> {
        if self.inner.has_container() {
            return Err(Status::already_exists(format!(
                "container {}: already exists",
                request.id
            )));
        }
        if !request.checkpoint.is_empty() {
            return Err(Status::unimplemented("checkpoint/restore is not offered"));
        }
        let bundle = PathBuf::from(&request.bundle);
        if let Some(options) = request
            .options
            .as_ref()
            .and_then(berth_api::any::unpack::<berth_api::containerd::runc::v1::Options>)
        {
            self.choose_runtime(&options, &bundle)?;
        }
        let io = self.stdio_request(
            &request.id,
            [&request.stdin, &request.stdout, &request.stderr],
            request.terminal,
        );
        let rootfs_mounted = mount_rootfs(&bundle, &request.rootfs)?;
        let mut setup = stdio::Setup::new(&io)?;
        let io_for_terminal = io.clone();
        let options = CreateOptions {
            id: request.id.clone(),
            bundle: bundle.clone(),
            no_new_keyring: true,
            stdio: setup.process.take(),
            console: setup.console.take(),
            ..CreateOptions::default()
        };
        let runtime = self.container_runtime();
        let inner = Arc::clone(&self.inner);
        let created = tokio::task::spawn_blocking(move || {
            let _children = inner.children.blocking_lock();
            let pid = runtime.create(&options).map_err(runtime_error)?;
            let mut init = Process::new(io.clone());
            init.pid = pid as u32;
            *inner.container.lock().unwrap_or_else(|p| p.into_inner()) = Some(Container {
                id: options.id.clone(),
                bundle: options.bundle.clone(),
                rootfs_mounted,
                paused: false,
                init,
                execs: HashMap::new(),
            });
            Ok(pid as u32)
        })
        .await;
        let pid = match joined(created) {
            Ok(pid) => pid,
            Err(e) => {
                if rootfs_mounted {
                    let _ = unmount_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        let mut running = Some(setup.finish(&io_for_terminal)?);
        self.with_container(&request.id, |c| {
            c.init.stdio = running.take();
            Ok(())
        })?;
        berth_core::failpoint::check("shim.after-create")?;
        let (id, oom_bundle) = (request.id.clone(), bundle.clone());
        if let Ok(Some(source)) = self
            .runtime(move |runtime| Ok(runtime.cgroup(&id, &oom_bundle)?.oom_source()))
            .await
        {
            crate::oom::watch(source, request.id.clone(), self.inner.publisher.clone());
        }
        self.inner.publisher.publish(
            "/tasks/create",
            &TaskCreate {
                container_id: request.id.clone(),
                bundle: request.bundle.clone(),
                rootfs: request.rootfs.clone(),
                io: Some(TaskIo {
                    stdin: request.stdin,
                    stdout: request.stdout,
                    stderr: request.stderr,
                    terminal: request.terminal,
                }),
                checkpoint: String::new(),
                pid,
            },
        );
        Ok(CreateTaskResponse { pid })
    }

    async fn start(&self, _context: RequestContext, request: StartRequest) -> Result<StartResponse, Status> {
        if request.exec_id.is_empty() {
            berth_core::failpoint::check("shim.before-start")?;
            let (started, pid) = self.with_container(&request.id, |c| Ok((c.init.started, c.init.pid)))?;
            if started {
                return Err(Status::failed_precondition(format!(
                    "container {}: already started",
                    request.id
                )));
            }
            let runtime = self.container_runtime();
            let inner = Arc::clone(&self.inner);
            let id = request.id.clone();
            joined(
                tokio::task::spawn_blocking(move || {
                    // The start event goes out before the reaper can report
                    // the exit of a process that ends at once.
                    let _children = inner.children.blocking_lock();
                    runtime.start(&id).map_err(runtime_error)?;
                    if let Some(c) = inner.container.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                        c.init.started = true;
                    }
                    inner
                        .publisher
                        .publish("/tasks/start", &TaskStart { container_id: id, pid });
                    Ok(())
                })
                .await,
            )?;
            return Ok(StartResponse { pid });
        }
        // An exec: run it now.
        let (spec, io) = self.with_container(&request.id, |c| {
            let process = c
                .execs
                .get_mut(&request.exec_id)
                .ok_or_else(|| Status::not_found(format!("process {}: not found", request.exec_id)))?;
            let spec = process
                .spec
                .take()
                .ok_or_else(|| Status::failed_precondition(format!("process {}: already started", request.exec_id)))?;
            Ok((spec, process.request.clone()))
        })?;
        let mut setup = stdio::Setup::new(&io)?;
        let options = ExecOptions {
            id: request.id.clone(),
            process: spec,
            pid_file: None,
            console_socket: None,
            preserve_fds: 0,
            stdio: setup.process.take(),
            console: setup.console.take(),
            ignore_paused: false,
        };
        let runtime = self.container_runtime();
        let inner = Arc::clone(&self.inner);
        let exec_id = request.exec_id.clone();
        let pid = joined(
            tokio::task::spawn_blocking(move || {
                let _children = inner.children.blocking_lock();
                let pid = runtime.exec(&options).map_err(runtime_error)? as u32;
                let mut guard = inner.container.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(process) = guard.as_mut().and_then(|c| c.execs.get_mut(&exec_id)) {
                    process.pid = pid;
                    process.started = true;
                }
                // Before the reaper can report its exit.
                inner.publisher.publish(
                    "/tasks/exec-started",
                    &TaskExecStarted {
                        container_id: options.id.clone(),
                        exec_id: exec_id.clone(),
                        pid,
                    },
                );
                Ok(pid)
            })
            .await,
        )?;
        let mut running = Some(setup.finish(&io)?);
        self.with_container(&request.id, |c| {
            if let Some(process) = c.execs.get_mut(&request.exec_id) {
                process.stdio = running.take();
            }
            Ok(())
        })?;
        Ok(StartResponse { pid })
    }

    async fn delete(&self, _context: RequestContext, request: DeleteRequest) -> Result<DeleteResponse, Status> {
        if !request.exec_id.is_empty() {
            return self.with_container(&request.id, |c| {
                let exit = match c.execs.get(&request.exec_id) {
                    None => return Err(Status::not_found(format!("process {}: not found", request.exec_id))),
                    Some(p) if p.started && p.exited().is_none() => {
                        return Err(Status::failed_precondition(format!(
                            "process {}: still running",
                            request.exec_id
                        )));
                    }
                    Some(p) => (p.pid, p.exited()),
                };
                c.execs.remove(&request.exec_id);
                Ok(DeleteResponse {
                    pid: exit.0,
                    exit_status: exit.1.map_or(0, |e| e.status),
                    exited_at: exit.1.map(|e| timestamp(e.at)),
                })
            });
        }
        let (pid, started, exit, bundle, mounted) = self.with_container(&request.id, |c| {
            Ok((
                c.init.pid,
                c.init.started,
                c.init.exited(),
                c.bundle.clone(),
                c.rootfs_mounted,
            ))
        })?;
        if started && exit.is_none() {
            return Err(Status::failed_precondition(format!(
                "container {}: cannot delete a running task",
                request.id
            )));
        }
        let id = request.id.clone();
        // A created task never started is killed with its init.
        self.runtime(move |runtime| runtime.delete(&id, !started)).await?;
        if mounted {
            unmount_rootfs(&bundle)?;
        }
        let exit = exit.unwrap_or(Exit {
            status: 137,
            at: std::time::SystemTime::now(),
        });
        *self.inner.container.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.inner.publisher.publish(
            "/tasks/delete",
            &TaskDelete {
                container_id: request.id.clone(),
                pid,
                exit_status: exit.status,
                exited_at: Some(timestamp(exit.at)),
                id: request.id,
            },
        );
        Ok(DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        })
    }

    async fn exec(&self, _context: RequestContext, request: ExecProcessRequest) -> Result<(), Status> {
        let spec = parse_process_spec(request.spec.as_ref())?;
        self.with_container(&request.id, |c| {
            if c.init.exited().is_some() || !c.init.started {
                return Err(Status::failed_precondition(format!(
                    "container {}: not running",
                    request.id
                )));
            }
            if c.execs.contains_key(&request.exec_id) {
                return Err(Status::already_exists(format!(
                    "process {}: already exists",
                    request.exec_id
                )));
            }
            let mut process = Process::new(self.stdio_request(
                &request.id,
                [&request.stdin, &request.stdout, &request.stderr],
                request.terminal,
            ));
            let mut spec = spec;
            spec.set_terminal(Some(request.terminal));
            process.spec = Some(spec);
            c.execs.insert(request.exec_id.clone(), process);
            Ok(())
        })?;
        self.inner.publisher.publish(
            "/tasks/exec-added",
            &TaskExecAdded {
                container_id: request.id,
                exec_id: request.exec_id,
            },
        );
        Ok(())
    }

    async fn state(&self, _context: RequestContext, request: StateRequest) -> Result<StateResponse, Status> {
        self.with_container(&request.id, |c| {
            let process = c.process(&request.exec_id)?;
            let exit = process.exited();
            let status = match (exit, process.started) {
                (Some(_), _) => TaskStatus::Stopped,
                (None, false) => TaskStatus::Created,
                (None, true) if request.exec_id.is_empty() && c.paused => TaskStatus::Paused,
                (None, true) => TaskStatus::Running,
            };
            Ok(StateResponse {
                id: request.id.clone(),
                bundle: c.bundle.display().to_string(),
                pid: process.pid,
                status: status as i32,
                stdin: process.request.stdin.clone(),
                stdout: process.request.stdout.clone(),
                stderr: process.request.stderr.clone(),
                terminal: process.request.terminal,
                exit_status: exit.map_or(0, |e| e.status),
                exited_at: exit.map(|e| timestamp(e.at)),
                exec_id: request.exec_id.clone(),
            })
        })
    }

    async fn pids(&self, _context: RequestContext, request: PidsRequest) -> Result<PidsResponse, Status> {
        let execs: HashMap<u32, String> = self.with_container(&request.id, |c| {
            Ok(c.execs.iter().map(|(id, p)| (p.pid, id.clone())).collect())
        })?;
        let id = request.id.clone();
        let pids = self.runtime(move |runtime| runtime.pids(&id)).await?;
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                info: execs.get(&(pid as u32)).map(|exec_id| {
                    berth_api::any::pack(&berth_api::containerd::runc::v1::ProcessDetails {
                        exec_id: exec_id.clone(),
                    })
                }),
            })
            .collect();
        Ok(PidsResponse { processes })
    }

    async fn pause(&self, _context: RequestContext, request: PauseRequest) -> Result<(), Status> {
        self.freeze(request.id, true).await
    }

    async fn resume(&self, _context: RequestContext, request: ResumeRequest) -> Result<(), Status> {
        self.freeze(request.id, false).await
    }

    async fn kill(&self, _context: RequestContext, request: KillRequest) -> Result<(), Status> {
        let signal = signal_from(request.signal)?;
        if !request.exec_id.is_empty() {
            let pid = self.with_container(&request.id, |c| {
                let process = c
                    .execs
                    .get(&request.exec_id)
                    .ok_or_else(|| Status::not_found(format!("process {}: not found", request.exec_id)))?;
                if !process.started || process.exited().is_some() {
                    return Err(Status::not_found(format!(
                        "process {}: process already finished",
                        request.exec_id
                    )));
                }
                Ok(process.pid)
            })?;
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
                .map_err(|e| Status::internal(format!("signalling process {}: {e}", request.exec_id)));
        }
        let finished = self.with_container(&request.id, |c| Ok(c.init.exited().is_some()))?;
        if finished && !request.all {
            return Err(Status::not_found(format!(
                "container {}: process already finished",
                request.id
            )));
        }
        let id = request.id.clone();
        let all = request.all;
        self.runtime(move |runtime| runtime.kill(&id, signal, all)).await
    }

    async fn resize_pty(&self, _context: RequestContext, request: ResizePtyRequest) -> Result<(), Status> {
        self.with_container(&request.id, |c| {
            let process = c.process(&request.exec_id)?;
            match &process.stdio {
                Some(io) => io.resize(request.width, request.height),
                None => Err(Status::not_found("the process has no terminal")),
            }
        })
    }

    async fn close_io(&self, _context: RequestContext, request: CloseIoRequest) -> Result<(), Status> {
        self.with_container(&request.id, |c| {
            let process = c.process(&request.exec_id)?;
            if request.stdin
                && let Some(io) = &process.stdio
            {
                io.close_stdin();
            }
            Ok(())
        })
    }

    async fn update(&self, _context: RequestContext, request: UpdateTaskRequest) -> Result<(), Status> {
        self.with_container(&request.id, |_| Ok(()))?;
        let any = request
            .resources
            .ok_or_else(|| Status::invalid_argument("update: resources are missing"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| Status::invalid_argument(format!("update: resources: {e}")))?;
        let id = request.id;
        self.runtime(move |runtime| runtime.update(&id, &resources)).await
    }

    async fn wait(&self, _context: RequestContext, request: WaitRequest) -> Result<WaitResponse, Status> {
        let mut exit = self.process_exit(&request.id, &request.exec_id)?;
        let exit = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Status::not_found(format!("container {}: deleted while waited for", request.id)))?
            .unwrap_or(Exit {
                status: 255,
                at: std::time::SystemTime::now(),
            });
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        })
    }

    async fn stats(&self, _context: RequestContext, request: StatsRequest) -> Result<StatsResponse, Status> {
        let bundle = self.with_container(&request.id, |c| Ok(c.bundle.clone()))?;
        let id = request.id;
        let stats = self
            .runtime(move |runtime| runtime.cgroup(&id, &bundle)?.stats())
            .await?;
        Ok(StatsResponse {
            stats: Some(berth_api::any::pack(&crate::metrics::v1(&stats))),
        })
    }

    async fn connect(&self, _context: RequestContext, request: ConnectRequest) -> Result<ConnectResponse, Status> {
        let task_pid = self.with_container(&request.id, |c| Ok(c.init.pid)).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: advertised_version(),
        })
    }

    async fn shutdown(&self, _context: RequestContext, request: ShutdownRequest) -> Result<(), Status> {
        // As containerd's shims: a shim with a container left keeps running.
        if self.inner.has_container() && !request.now {
            return Ok(());
        }
        // Gone before the answer: a successor may bind the same path at once.
        if let Some(file) = &self.inner.socket_file {
            file.remove_if_ours();
        }
        let _ = self.inner.shutdown.send(true);
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(io) = &self.stdio {
            io.close_stdin();
        }
    }
}
