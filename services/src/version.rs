//! Version: which berthd build answers (`ctr version`).

use berth_api::containerd::services::version::v1::VersionResponse;
use berth_api::containerd::services::version::v1::version_server::{Version, VersionServer};
use berth_core::plugin::{Registration, types};
use tonic::{Request, Response, Status};

use crate::namespace_header::namespace_optional;

/// berthd's semantic version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision berthd was built from (`.m` when the tree was modified).
pub const REVISION: &str = env!("BERTH_REVISION");

/// Version and revision on one line, for `--version` flags.
pub const VERSION_LINE: &str = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("BERTH_REVISION"), ")");

/// Answers Version.Version.
#[derive(Debug, Default)]
pub struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}

/// `io.containerd.grpc.v1.version`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "version",
        requires: &[],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move { routed_service!(ctx, VersionServer::new(VersionService), namespace_optional) })
        }),
    }
}
