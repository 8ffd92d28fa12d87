//! `grpc.health.v1.Health`: the standard health protocol Go clients'
//! `IsServing` calls. The whole server and each routed service answer
//! SERVING until shutdown begins, then NOT_SERVING.

use std::collections::HashSet;
use std::pin::Pin;

use berth_api::grpc::health::v1::health_check_response::ServingStatus;
use berth_api::grpc::health::v1::health_server::{Health, HealthServer};
use berth_api::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use berth_core::plugin::{GrpcService, Registration, types};
use berth_core::shutdown::ShutdownSignal;
use futures_util::Stream;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::namespace_header::namespace_optional;

/// Answers health checks for the server and the services it routes.
#[derive(Debug)]
pub struct HealthService {
    services: HashSet<String>,
    shutdown: ShutdownSignal,
}

impl HealthService {
    /// A health service that knows `services` (full gRPC service names).
    pub fn new(services: impl IntoIterator<Item = String>, shutdown: ShutdownSignal) -> Self {
        Self {
            services: services.into_iter().collect(),
            shutdown,
        }
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        if !service.is_empty() && !self.services.contains(service) {
            return None;
        }
        Some(if self.shutdown.is_fired() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("service {service:?}: unknown service"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let first = self.status(&service).unwrap_or(ServingStatus::ServiceUnknown);
        Ok(Response::new(watch_stream(first, self.shutdown.clone())))
    }
}

enum WatchState {
    Start,
    UntilShutdown,
    Done,
}

/// Sends the current status and then waits; when shutdown begins a served
/// service reports NOT_SERVING and the stream ends, so watchers do not hold
/// a graceful shutdown open.
fn watch_stream(first: ServingStatus, shutdown: ShutdownSignal) -> WatchStream {
    let stream = futures_util::stream::unfold(WatchState::Start, move |state| {
        let shutdown = shutdown.clone();
        async move {
            match state {
                WatchState::Start => {
                    let next = if first == ServingStatus::NotServing {
                        WatchState::Done
                    } else {
                        WatchState::UntilShutdown
                    };
                    Some((Ok(response(first)), next))
                }
                WatchState::UntilShutdown => {
                    shutdown.fired().await;
                    (first == ServingStatus::Serving)
                        .then(|| (Ok(response(ServingStatus::NotServing)), WatchState::Done))
                }
                WatchState::Done => None,
            }
        }
    });
    Box::pin(stream)
}

/// `io.containerd.grpc.v1.healthcheck`, initialised after every other
/// plugin so it knows every service the daemon routes.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "healthcheck",
        requires: &[types::ALL],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let mut names: Vec<String> = ctx
                    .plugins()
                    .of_type(types::GRPC)
                    .iter()
                    .filter_map(|entry| entry.get::<GrpcService>().ok())
                    .map(|service| service.name().to_string())
                    .collect();
                names.push(<HealthServer<HealthService> as NamedService>::NAME.to_string());
                routed_service!(
                    ctx,
                    HealthServer::new(HealthService::new(names, ctx.daemon.shutdown.clone())),
                    namespace_optional
                )
            })
        }),
    }
}
