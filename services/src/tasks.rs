//! Tasks: a container's running processes, through its shim (`ctr run`,
//! `ctr task ...`). Task events come from the shims themselves.

use std::sync::Arc;

use berth_api::containerd::services::tasks::v1::tasks_server::{Tasks, TasksServer};
use berth_api::containerd::services::tasks::v1::{
    CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest, CreateTaskRequest, CreateTaskResponse,
    DeleteProcessRequest, DeleteResponse, DeleteTaskRequest, ExecProcessRequest, GetRequest, GetResponse, KillRequest,
    ListPidsRequest, ListPidsResponse, ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse,
    PauseTaskRequest, ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use berth_api::containerd::task::v2 as shim_api;
use berth_api::containerd::types::Metric;
use berth_api::containerd::v1::types::Process;
use berth_core::Error;
use berth_core::filters::{Adaptor, Filter, string_field};
use berth_core::gc::GarbageCollector;
use berth_core::metadata::{MetadataStore, containers};
use berth_core::plugin::{Registration, types};
use berth_core::runtime::{RuntimeManager, Shim, TaskSpec};
use berth_core::snapshots::namespaced::NamespacedSnapshots;
use tonic::{Request, Response, Status};

use crate::namespace_header::{namespace_required, required};

/// Answers the Tasks service over the runtime manager.
#[derive(Debug)]
pub struct TasksService {
    meta: MetadataStore,
    runtime: Arc<RuntimeManager>,
    snapshots: NamespacedSnapshots,
}

impl TasksService {
    /// A service creating tasks for the containers in `meta`.
    pub fn new(meta: MetadataStore, runtime: Arc<RuntimeManager>, snapshots: NamespacedSnapshots) -> Self {
        Self {
            meta,
            runtime,
            snapshots,
        }
    }

    fn shim(&self, namespace: &str, id: &str) -> Result<Shim, Status> {
        self.runtime
            .get(namespace, id)
            .ok_or_else(|| Error::not_found(format!("task {id}: no running task found")).into())
    }

    async fn process(&self, shim: &Shim, exec_id: &str) -> Result<Process, Status> {
        let state = shim
            .client
            .state(
                &shim.options(),
                &shim_api::StateRequest {
                    id: shim.id.clone(),
                    exec_id: exec_id.to_string(),
                },
            )
            .await?;
        Ok(Process {
            container_id: shim.id.clone(),
            id: if exec_id.is_empty() {
                shim.id.clone()
            } else {
                exec_id.to_string()
            },
            pid: state.pid,
            status: state.status,
            stdin: state.stdin,
            stdout: state.stdout,
            stderr: state.stderr,
            terminal: state.terminal,
            exit_status: state.exit_status,
            exited_at: state.exited_at,
        })
    }
}

/// Filter fields of a task: `id`, `pid`, `status`.
struct TaskFields<'a>(&'a Process);

impl Adaptor for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<std::borrow::Cow<'_, str>> {
        match path.first()?.as_str() {
            "id" | "container_id" => string_field(&self.0.container_id),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(&self, request: Request<CreateTaskRequest>) -> Result<Response<CreateTaskResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let (ns, id) = (namespace.clone(), request.container_id.clone());
        let container = self
            .meta
            .read(move |txn| containers::get(txn, &ns, &id))
            .await?
            .ok_or_else(|| Error::not_found(format!("container {:?}", request.container_id)))?;
        if self.runtime.get(&namespace, &container.id).is_some() {
            return Err(Error::already_exists(format!("task {}: already exists", container.id)).into());
        }
        if request.checkpoint.is_some() {
            return Err(Error::not_implemented("checkpoint/restore is not offered").into());
        }
        let spec = container
            .spec
            .as_ref()
            .ok_or_else(|| Error::invalid_argument(format!("container {}: has no spec", container.id)))?;
        let spec_json = spec.value.clone();
        serde_json::from_slice::<serde_json::Value>(&spec_json)
            .map_err(|e| Error::invalid_argument(format!("container {}: spec is not JSON: {e}", container.id)))?;
        let mut rootfs = request.rootfs;
        if rootfs.is_empty() && !container.snapshot_key.is_empty() {
            rootfs = self
                .snapshots
                .mounts(&namespace, &container.snapshotter, &container.snapshot_key)
                .await?;
        }
        let runtime = container.runtime.clone().unwrap_or_default();
        let task = TaskSpec {
            runtime: if runtime.name.is_empty() {
                "io.containerd.runc.v2".into()
            } else {
                runtime.name
            },
            options: request.options.or(runtime.options),
            spec_json,
            rootfs,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            terminal: request.terminal,
        };
        let shim = self.runtime.create(&namespace, &container.id, task).await?;
        Ok(Response::new(CreateTaskResponse {
            container_id: container.id,
            pid: shim.pid,
        }))
    }

    async fn start(&self, request: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        berth_core::failpoint::check("tasks.before-start")?;
        let started = shim
            .client
            .start(
                &shim.options(),
                &shim_api::StartRequest {
                    id: request.container_id,
                    exec_id: request.exec_id,
                },
            )
            .await?;
        Ok(Response::new(StartResponse { pid: started.pid }))
    }

    async fn delete(&self, request: Request<DeleteTaskRequest>) -> Result<Response<DeleteResponse>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().container_id;
        let deleted = self.runtime.delete(&namespace, &id).await?;
        Ok(Response::new(DeleteResponse {
            id,
            pid: deleted.pid,
            exit_status: deleted.exit_status,
            exited_at: deleted.exited_at,
        }))
    }

    async fn delete_process(&self, request: Request<DeleteProcessRequest>) -> Result<Response<DeleteResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        if request.exec_id.is_empty() {
            return Err(Error::invalid_argument("delete process: exec_id must be set").into());
        }
        let shim = self.shim(&namespace, &request.container_id)?;
        let deleted = shim
            .client
            .delete(
                &shim.options(),
                &shim_api::DeleteRequest {
                    id: request.container_id,
                    exec_id: request.exec_id.clone(),
                },
            )
            .await?;
        Ok(Response::new(DeleteResponse {
            id: request.exec_id,
            pid: deleted.pid,
            exit_status: deleted.exit_status,
            exited_at: deleted.exited_at,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        let process = self.process(&shim, &request.exec_id).await?;
        Ok(Response::new(GetResponse { process: Some(process) }))
    }

    async fn list(&self, request: Request<ListTasksRequest>) -> Result<Response<ListTasksResponse>, Status> {
        let namespace = required(&request)?;
        let filter = request.into_inner().filter;
        let filter = Filter::parse_all(&if filter.is_empty() { Vec::new() } else { vec![filter] })?;
        let mut tasks = Vec::new();
        for shim in self.runtime.list(&namespace) {
            if let Ok(process) = self.process(&shim, "").await
                && filter.matches(&TaskFields(&process))
            {
                tasks.push(process);
            }
        }
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        shim.client
            .kill(
                &shim.options(),
                &shim_api::KillRequest {
                    id: request.container_id,
                    exec_id: request.exec_id,
                    signal: request.signal,
                    all: request.all,
                },
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn exec(&self, request: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        if request.exec_id.is_empty() {
            return Err(Error::invalid_argument("exec: exec_id must be set").into());
        }
        berth_core::identifiers::validate("exec id", &request.exec_id)?;
        let shim = self.shim(&namespace, &request.container_id)?;
        shim.client
            .exec(
                &shim.options(),
                &shim_api::ExecProcessRequest {
                    id: request.container_id,
                    exec_id: request.exec_id,
                    terminal: request.terminal,
                    stdin: request.stdin,
                    stdout: request.stdout,
                    stderr: request.stderr,
                    spec: request.spec,
                },
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, request: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        shim.client
            .resize_pty(
                &shim.options(),
                &shim_api::ResizePtyRequest {
                    id: request.container_id,
                    exec_id: request.exec_id,
                    width: request.width,
                    height: request.height,
                },
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, request: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        shim.client
            .close_io(
                &shim.options(),
                &shim_api::CloseIoRequest {
                    id: request.container_id,
                    exec_id: request.exec_id,
                    stdin: request.stdin,
                },
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn pause(&self, request: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().container_id;
        let shim = self.shim(&namespace, &id)?;
        shim.client
            .pause(&shim.options(), &shim_api::PauseRequest { id })
            .await?;
        Ok(Response::new(()))
    }

    async fn resume(&self, request: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().container_id;
        let shim = self.shim(&namespace, &id)?;
        shim.client
            .resume(&shim.options(), &shim_api::ResumeRequest { id })
            .await?;
        Ok(Response::new(()))
    }

    async fn list_pids(&self, request: Request<ListPidsRequest>) -> Result<Response<ListPidsResponse>, Status> {
        let namespace = required(&request)?;
        let id = request.into_inner().container_id;
        let shim = self.shim(&namespace, &id)?;
        let pids = shim.client.pids(&shim.options(), &shim_api::PidsRequest { id }).await?;
        Ok(Response::new(ListPidsResponse {
            processes: pids.processes,
        }))
    }

    async fn checkpoint(
        &self,
        _request: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented("checkpoint is not offered"))
    }

    async fn update(&self, request: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        shim.client
            .update(
                &shim.options(),
                &shim_api::UpdateTaskRequest {
                    id: request.container_id,
                    resources: request.resources,
                    annotations: request.annotations,
                },
            )
            .await?;
        Ok(Response::new(()))
    }

    async fn metrics(&self, request: Request<MetricsRequest>) -> Result<Response<MetricsResponse>, Status> {
        let namespace = required(&request)?;
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let mut metrics = Vec::new();
        for shim in self.runtime.list(&namespace) {
            let fields = Process {
                container_id: shim.id.clone(),
                ..Process::default()
            };
            if !filter.matches(&TaskFields(&fields)) {
                continue;
            }
            if let Ok(stats) = shim
                .client
                .stats(&shim.options(), &shim_api::StatsRequest { id: shim.id.clone() })
                .await
            {
                metrics.push(Metric {
                    timestamp: Some(berth_core::timestamps::now()),
                    id: shim.id.clone(),
                    data: stats.stats,
                });
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let shim = self.shim(&namespace, &request.container_id)?;
        let waited = shim
            .client
            .wait(
                &shim.waiting_options(),
                &shim_api::WaitRequest {
                    id: request.container_id,
                    exec_id: request.exec_id,
                },
            )
            .await?;
        Ok(Response::new(WaitResponse {
            exit_status: waited.exit_status,
            exited_at: waited.exited_at,
        }))
    }
}

/// `io.containerd.grpc.v1.tasks`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "tasks",
        requires: &[types::METADATA, types::GC, types::RUNTIME_V2],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                let runtime: Arc<RuntimeManager> = ctx.get(types::RUNTIME_V2)?;
                let snapshots = NamespacedSnapshots::new((*meta).clone(), Arc::clone(gc.snapshotters()));
                routed_service!(
                    ctx,
                    TasksServer::new(TasksService::new((*meta).clone(), runtime, snapshots)),
                    namespace_required
                )
            })
        }),
    }
}
