//! Per-method gRPC counts for the metrics endpoint, named as the
//! Prometheus gRPC middleware containerd uses names them:
//! `grpc_server_started_total` and `grpc_server_handled_total` (by
//! `grpc_code`), and with `[metrics] grpc_histogram = true`
//! `grpc_server_handling_seconds`.
//!
//! A call is counted handled when its answer is complete: the status comes
//! from the response headers (an error answered at once) or the trailers
//! that end the body; a body dropped before its end counts as Canceled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The buckets of the Go middleware's handling-time histogram, in seconds.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Which call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

/// Which call, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

type HistogramFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

/// The counts, shared by every connection on both transports.
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    started: Family<CallLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Option<HistogramFamily>,
}

impl GrpcMetrics {
    /// Counts, with handling times only when `histogram`.
    pub fn new(histogram: bool) -> Self {
        let buckets: fn() -> Histogram = || Histogram::new(BUCKETS);
        Self {
            started: Family::default(),
            handled: Family::default(),
            handling: histogram.then(|| Family::new_with_constructor(buckets)),
        }
    }

    /// Adds the families to a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            self.handled.clone(),
        );
        if let Some(handling) = &self.handling {
            registry.register(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                handling.clone(),
            );
        }
    }

    fn finished(&self, call: &CallLabels, code: &'static str, started: Instant) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_type: call.grpc_type,
                grpc_service: call.grpc_service.clone(),
                grpc_method: call.grpc_method.clone(),
                grpc_code: code,
            })
            .inc();
        if let Some(handling) = &self.handling {
            handling.get_or_create(call).observe(started.elapsed().as_secs_f64());
        }
    }
}

/// The call a request path (`/containerd.services.version.v1.Version/Version`)
/// names, typed from the API's descriptors (`unary`, `server_stream`, ...).
fn call_of(path: &str) -> CallLabels {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let grpc_type = berth_api::any::descriptor_pool()
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .map_or("unary", |m| match (m.is_client_streaming(), m.is_server_streaming()) {
            (false, false) => "unary",
            (false, true) => "server_stream",
            (true, false) => "client_stream",
            (true, true) => "bidi_stream",
        });
    CallLabels {
        grpc_type,
        grpc_service: service.to_string(),
        grpc_method: method.to_string(),
    }
}

/// gRPC's status codes by number, as the metrics name them.
fn code_name(code: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|n| NAMES.get(n).copied())
        .unwrap_or("Unknown")
}

/// Adds [`CountCalls`] to a service stack.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: Option<Arc<GrpcMetrics>>,
}

impl GrpcMetricsLayer {
    /// Counting into `metrics`; None (no metrics endpoint) counts nothing.
    pub fn new(metrics: Option<Arc<GrpcMetrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = CountCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountCalls {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts each call as it starts and as its answer ends.
#[derive(Clone, Debug)]
pub struct CountCalls<S> {
    inner: S,
    metrics: Option<Arc<GrpcMetrics>>,
}

impl<S, B, R> Service<http::Request<B>> for CountCalls<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let counting = self.metrics.clone().map(|metrics| {
            let call = call_of(request.uri().path());
            metrics.started.get_or_create(&call).inc();
            Pending {
                metrics,
                call,
                started: Instant::now(),
            }
        });
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // An error answered at once carries its status in the headers.
            let early = response.headers().get("grpc-status").map(|c| code_name(c.as_bytes()));
            let mut pending = counting;
            if let Some(code) = early
                && let Some(pending) = pending.take()
            {
                pending.finish(code);
            }
            Ok(response.map(|inner| CountedBody { inner, pending }))
        })
    }
}

/// A call whose end is not counted yet.
struct Pending {
    metrics: Arc<GrpcMetrics>,
    call: CallLabels,
    started: Instant,
}

impl Pending {
    fn finish(self, code: &'static str) {
        self.metrics.finished(&self.call, code, self.started);
    }
}

/// A response body that counts its call when its trailers come (or it
/// ends, or is dropped unfinished).
pub struct CountedBody<B> {
    inner: B,
    pending: Option<Pending>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(pending) = this.pending.take()
                {
                    let code = trailers
                        .get("grpc-status")
                        .map_or("Unknown", |c| code_name(c.as_bytes()));
                    pending.finish(code);
                }
            }
            Some(Err(_)) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish("Unknown");
                }
            }
            None => {
                if let Some(pending) = this.pending.take() {
                    pending.finish("Unknown");
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish("Canceled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_typed_from_the_descriptors() {
        let unary = call_of("/containerd.services.version.v1.Version/Version");
        assert_eq!(
            (unary.grpc_type, unary.grpc_service.as_str(), unary.grpc_method.as_str()),
            ("unary", "containerd.services.version.v1.Version", "Version")
        );
        assert_eq!(
            call_of("/containerd.services.events.v1.Events/Subscribe").grpc_type,
            "server_stream"
        );
        assert_eq!(
            call_of("/containerd.services.content.v1.Content/Write").grpc_type,
            "bidi_stream"
        );
        assert_eq!(call_of("/no.such.Service/X").grpc_type, "unary");
    }

    #[test]
    fn codes_are_named() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"5"), "NotFound");
        assert_eq!(code_name(b"16"), "Unauthenticated");
        assert_eq!(code_name(b"99"), "Unknown");
    }
}
