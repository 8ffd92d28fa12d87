//! Tasks across daemon restarts and shim deaths.
//!
//! At startup every bundle under `<state>/tasks/<ns>/<id>` is looked at in
//! parallel: a shim that answers `Connect` within a short time is taken
//! back; one that does not (socket gone or refused) is cleaned up with the
//! shim's `delete` command and its task's exit published (`/tasks/exit`
//! with the status the shim reports, 255 when unknown, then
//! `/tasks/delete`). Bundles whose container is gone are cleaned up too,
//! and work directories without a bundle (a reboot emptied the state
//! directory) removed. While running, a shim whose connection drops is
//! handled the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_api::containerd::events::{TaskDelete, TaskExit};
use berth_api::containerd::task::v2::{ConnectRequest, DeleteResponse};
use prost::Message as _;

use super::{Bundle, RuntimeManager, Shim, protocol};
use crate::metadata::containers;

/// How long a shim may take to answer at recovery.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RuntimeManager {
    /// Takes back every task whose shim still runs; cleans up the others.
    pub async fn recover(self: &Arc<Self>) {
        let mut found = Vec::new();
        for namespace in subdirectories(&self.state) {
            for id in subdirectories(&self.state.join(&namespace)) {
                found.push((namespace.clone(), id));
            }
        }
        let mut handles = Vec::new();
        for (namespace, id) in found {
            let manager = Arc::clone(self);
            handles.push(tokio::spawn(async move { manager.recover_task(&namespace, &id).await }));
        }
        for handle in handles {
            let _ = handle.await;
        }
        // Work directories of tasks that no longer have a bundle.
        for namespace in subdirectories(&self.root) {
            for id in subdirectories(&self.root.join(&namespace)) {
                if !self.state.join(&namespace).join(&id).exists() {
                    let _ = std::fs::remove_dir_all(self.root.join(&namespace).join(&id));
                }
            }
        }
    }

    async fn recover_task(self: &Arc<Self>, namespace: &str, id: &str) {
        let bundle = Bundle::at(&self.state, &self.root, namespace, id);
        let container_exists = match &self.meta {
            Some(meta) => {
                let (ns, lookup) = (namespace.to_string(), id.to_string());
                meta.read(move |txn| containers::get(txn, &ns, &lookup))
                    .await
                    .map(|c| c.is_some())
                    .unwrap_or(true)
            }
            None => true,
        };
        let binary = std::fs::read_to_string(bundle.dir.join("shim-binary-path"))
            .map(PathBuf::from)
            .ok();
        let address = std::fs::read_to_string(bundle.dir.join("address")).ok();
        if let (Some(binary), Some(address)) = (binary.clone(), address) {
            bundle.drain_log(namespace, id);
            if let Some(shim) = self.reconnect(namespace, id, &bundle, &binary, address.trim()).await {
                if shim.refused {
                    // A newer daemon's shim: neither ours to drive nor to clean up.
                    return;
                }
                if container_exists && shim.pid != 0 {
                    tracing::info!(namespace = %namespace, task = %id, pid = shim.pid, "task recovered");
                    self.adopt(shim);
                    return;
                }
                // The container is gone: the task goes too.
                shim.shutdown(true).await;
            }
        }
        tracing::warn!(namespace = %namespace, task = %id, "shim is gone; cleaning up the task");
        self.clean_up_dead(namespace, id, &bundle, binary.as_deref()).await;
    }

    async fn reconnect(
        &self,
        namespace: &str,
        id: &str,
        bundle: &Bundle,
        binary: &Path,
        address: &str,
    ) -> Option<Shim> {
        let client = tokio::time::timeout(CONNECT_TIMEOUT, super::connect(address))
            .await
            .ok()?
            .ok()?;
        let mut shim = Shim::new(client, namespace, id, bundle, binary);
        let options = shim.options().timeout(CONNECT_TIMEOUT);
        let connected = shim
            .client
            .connect(&options, &ConnectRequest { id: id.to_string() })
            .await
            .ok()?;
        shim.pid = connected.task_pid;
        if let Err(refusal) = protocol::supported(&connected.version) {
            tracing::error!(namespace = %namespace, task = %id, "{refusal}: the shim is left running, not taken over");
            shim.refused = true;
        }
        Some(shim)
    }

    /// Registers a shim and watches its connection.
    pub(super) fn adopt(self: &Arc<Self>, shim: Shim) {
        let key = (shim.namespace.clone(), shim.id.clone());
        self.lock().insert(key, shim.clone());
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            tracing::debug!(namespace = %shim.namespace, task = %shim.id, "watching the shim's connection");
            shim.client.connection().closed().await;
            tracing::debug!(namespace = %shim.namespace, task = %shim.id, "the shim's connection closed");
            // A task deleted normally is no longer registered by now.
            let still_ours = manager
                .lock()
                .get(&(shim.namespace.clone(), shim.id.clone()))
                .is_some_and(|s| s.client.connection().is_closed());
            if !still_ours {
                return;
            }
            manager.lock().remove(&(shim.namespace.clone(), shim.id.clone()));
            tracing::warn!(namespace = %shim.namespace, task = %shim.id, "shim died; cleaning up the task");
            manager
                .clean_up_dead(&shim.namespace, &shim.id, &shim.bundle, Some(&shim.binary))
                .await;
        });
    }

    /// Runs the shim's `delete` command, publishes the task's exit and
    /// delete, and removes the bundle.
    pub(super) async fn clean_up_dead(&self, namespace: &str, id: &str, bundle: &Bundle, binary: Option<&Path>) {
        let mut response = DeleteResponse {
            pid: 0,
            exit_status: 255,
            exited_at: None,
        };
        if let Some(binary) = binary
            && let Ok(out) = self
                .run_shim_command(namespace, id, bundle, binary, "delete", None)
                .await
            && let Ok(decoded) = DeleteResponse::decode(out.as_slice())
        {
            response = decoded;
        }
        let exited_at = response
            .exited_at
            .unwrap_or_else(|| crate::timestamps::from_system_time(SystemTime::now()));
        if let Some(events) = &self.events {
            let _ = events.publish(
                namespace,
                "/tasks/exit",
                &TaskExit {
                    container_id: id.to_string(),
                    id: id.to_string(),
                    pid: response.pid,
                    exit_status: response.exit_status,
                    exited_at: Some(exited_at),
                },
            );
            let _ = events.publish(
                namespace,
                "/tasks/delete",
                &TaskDelete {
                    container_id: id.to_string(),
                    pid: response.pid,
                    exit_status: response.exit_status,
                    exited_at: Some(exited_at),
                    id: id.to_string(),
                },
            );
        }
        bundle.remove();
    }
}

/// The names of the directories in `dir` (none if it cannot be read).
fn subdirectories(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect()
}
