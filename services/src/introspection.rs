//! Introspection: the plugins berthd runs (`ctr plugins ls`) and the
//! server's identity (`ctr version` prints its uuid).

use std::borrow::Cow;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::containerd::services::introspection::v1::introspection_server::{Introspection, IntrospectionServer};
use berth_api::containerd::services::introspection::v1::{Plugin, PluginsRequest, PluginsResponse, ServerResponse};
use berth_api::google::rpc::Status as RpcStatus;
use berth_core::filters::{Adaptor, Filter, string_field};
use berth_core::plugin::{PluginEntry, PluginSet, Registration, types};
use berth_core::{Error, Result};
use tonic::{Request, Response, Status};

use crate::namespace_header::namespace_optional;

/// Name of the file under the root that keeps the server's uuid.
pub const UUID_FILE: &str = "uuid";

/// Answers Introspection.Plugins and Introspection.Server.
#[derive(Debug)]
pub struct IntrospectionService {
    plugins: Arc<PluginSet>,
    uuid: String,
}

impl IntrospectionService {
    /// Serves `plugins` (a set that may still be growing) for a server
    /// identified by `uuid`.
    pub fn new(plugins: Arc<PluginSet>, uuid: String) -> Self {
        Self { plugins, uuid }
    }
}

fn describe(entry: &PluginEntry) -> Plugin {
    Plugin {
        r#type: entry.plugin_type.to_string(),
        id: entry.id.to_string(),
        requires: entry.requires.iter().map(|r| r.to_string()).collect(),
        platforms: entry.meta.platforms.clone(),
        exports: entry.meta.exports.clone(),
        capabilities: entry.meta.capabilities.clone(),
        init_err: entry.instance.as_ref().err().map(|e| RpcStatus {
            code: e.kind().code() as i32,
            message: e.to_string(),
            details: Vec::new(),
        }),
    }
}

/// Filter fields of a plugin: `type` and `id`, as containerd offers.
struct PluginFields<'a>(&'a Plugin);

impl Adaptor for PluginFields<'_> {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "type" => string_field(&self.0.r#type),
            "id" => string_field(&self.0.id),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(&self, request: Request<PluginsRequest>) -> Result<Response<PluginsResponse>, Status> {
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let plugins = self
            .plugins
            .entries()
            .iter()
            .map(|entry| describe(entry))
            .filter(|plugin| filter.matches(&PluginFields(plugin)))
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _request: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0),
            deprecations: Vec::new(),
        }))
    }
}

/// Reads the server's uuid from `<root>/uuid`, creating it on first start.
/// A file that does not hold a uuid is replaced (with a warning), since a
/// server must have an identity to answer `ctr version`.
pub fn load_or_create_uuid(root: &Path) -> Result<String> {
    let path = root.join(UUID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match uuid::Uuid::parse_str(text.trim()) {
            Ok(uuid) => return Ok(uuid.hyphenated().to_string()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "server uuid file is corrupt; writing a new one")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), &e)),
    }
    let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
    write_atomically(&path, uuid.as_bytes())?;
    Ok(uuid)
}

/// Writes `data` to a temporary file, syncs it and renames it over `path`,
/// then syncs the directory, so a crash leaves the old or the new file.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), &e))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), &e)
    })
}

/// `io.containerd.grpc.v1.introspection`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "introspection",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let root = ctx.daemon.root.clone();
                let uuid = tokio::task::spawn_blocking(move || load_or_create_uuid(&root))
                    .await
                    .map_err(|e| Error::internal(format!("server uuid: {e}")))??;
                routed_service!(
                    ctx,
                    IntrospectionServer::new(IntrospectionService::new(ctx.plugins(), uuid)),
                    namespace_optional
                )
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_uuid(dir.path()).unwrap();
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        assert_eq!(load_or_create_uuid(dir.path()).unwrap(), first);
        assert_eq!(std::fs::read_to_string(dir.path().join(UUID_FILE)).unwrap(), first);
    }

    #[test]
    fn a_corrupt_uuid_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(UUID_FILE), "not a uuid").unwrap();
        let uuid = load_or_create_uuid(dir.path()).unwrap();
        assert!(uuid::Uuid::parse_str(&uuid).is_ok());
        assert!(!dir.path().join(".uuid.tmp").exists());
    }
}
