//! The metrics endpoint: `[metrics] address`, `GET /v1/metrics` in the
//! Prometheus text format (OpenMetrics flavour), as containerd serves it.
//! Nothing listens unless an address is configured.
//!
//! Each scrape gathers what it shows then: the gRPC counts kept since
//! start, every task's cgroup figures from its shim, berthd's own process
//! figures.

use std::convert::Infallible;
use std::sync::Arc;

use berth_core::runtime::RuntimeManager;
use berth_core::shutdown::ShutdownSignal;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::grpc_metrics::GrpcMetrics;

/// The path scrapes use.
pub const PATH: &str = "/v1/metrics";

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    /// The gRPC counts.
    pub grpc: Arc<GrpcMetrics>,
    /// The tasks, for their shims' figures (None with the runtime plugin
    /// disabled).
    pub runtime: Option<Arc<RuntimeManager>>,
}

/// Serves scrapes until shutdown.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: ShutdownSignal) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.fired() => return,
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, sources.clone()));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    sources: Sources,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, content_type: &str, body: String| {
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(http::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != PATH {
        return Ok(reply(404, "text/plain", format!("not found: metrics are at {PATH}\n")));
    }
    if request.method() != hyper::Method::GET && request.method() != hyper::Method::HEAD {
        return Ok(reply(405, "text/plain", "only GET\n".to_string()));
    }
    let mut registry = Registry::default();
    sources.grpc.register(&mut registry);
    if let Some(runtime) = &sources.runtime {
        crate::task_metrics::register(runtime, &mut registry).await;
    }
    crate::process_metrics::register(&mut registry);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return Ok(reply(500, "text/plain", format!("encoding the metrics: {e}\n")));
    }
    Ok(reply(
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        text,
    ))
}
