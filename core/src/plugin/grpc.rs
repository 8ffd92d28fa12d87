//! The instance a gRPC plugin returns: a service the daemon adds to its
//! router. Kept type-erased so the daemon can serve whatever plugins exist.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

type AddFn = Box<dyn Fn(&mut RoutesBuilder) + Send + Sync>;

/// A gRPC service ready to be routed.
pub struct GrpcService {
    name: &'static str,
    add: AddFn,
}

impl std::fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GrpcService({})", self.name)
    }
}

impl GrpcService {
    /// Wraps a tonic service (already configured with interceptors and
    /// message limits).
    pub fn new<S, B>(service: S) -> Self
    where
        S: tower_service::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Self {
            name: S::NAME,
            add: Box::new(move |routes: &mut RoutesBuilder| {
                routes.add_service(service.clone());
            }),
        }
    }

    /// The full service name, e.g. `containerd.services.version.v1.Version`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds the service to a router.
    pub fn add_to(&self, routes: &mut RoutesBuilder) {
        (self.add)(routes);
    }
}
