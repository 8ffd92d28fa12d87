//! Diff: applies layers onto mounts (every unpack) and computes layers
//! between mounts (`ctr snapshot diff`, commits of containers).
//!
//! The work is done by the differ plugins the registry loaded, tried in
//! order until one does not answer NotImplemented, as containerd does.

use std::sync::Arc;

use berth_api::containerd::services::diff::v1::diff_server::{Diff, DiffServer};
use berth_api::containerd::services::diff::v1::{ApplyRequest, ApplyResponse, DiffRequest, DiffResponse};
use berth_core::diff::{self, DifferPlugin};
use berth_core::plugin::{Registration, skip, types};
use berth_core::{Error, ErrorKind};
use tonic::{Request, Response, Status};

use crate::lease_header::lease;
use crate::namespace_header::{namespace_required, required};

/// Answers the Diff service with the loaded differs.
pub struct DiffService {
    differs: Vec<Arc<DifferPlugin>>,
}

impl std::fmt::Debug for DiffService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffService")
            .field("differs", &self.differs.len())
            .finish()
    }
}

impl DiffService {
    /// A service trying `differs` in order.
    pub fn new(differs: Vec<Arc<DifferPlugin>>) -> Self {
        Self { differs }
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let layer = request
            .diff
            .ok_or_else(|| Error::invalid_argument("the layer descriptor (diff) must be set"))?;
        let apply = diff::ApplyRequest {
            namespace,
            layer,
            mounts: request.mounts,
            sync_fs: request.sync_fs,
            stream: None,
        };
        let applied = diff::apply_first(&self.differs, apply).await?;
        Ok(Response::new(ApplyResponse { applied: Some(applied) }))
    }

    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let request = request.into_inner();
        let compare = diff::CompareRequest {
            namespace,
            lower: request.left,
            upper: request.right,
            media_type: request.media_type,
            reference: request.r#ref,
            labels: request.labels,
            lease,
        };
        let mut last = Error::not_implemented("no differ is loaded");
        for differ in &self.differs {
            match differ.0.compare(compare.clone()).await {
                Ok(layer) => return Ok(Response::new(DiffResponse { diff: Some(layer) })),
                Err(e) if e.kind() == ErrorKind::NotImplemented => last = e,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }
}

/// `io.containerd.grpc.v1.diff`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "diff",
        requires: &[types::DIFFER],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let differs = diff::loaded(&ctx.plugins());
                if differs.is_empty() {
                    return Err(skip("no differ is loaded"));
                }
                routed_service!(ctx, DiffServer::new(DiffService::new(differs)), namespace_required)
            })
        }),
    }
}
