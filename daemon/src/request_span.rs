//! A tracing span around every gRPC request, carrying the method and the
//! namespace header, so everything a handler logs says which call it served;
//! at debug level each call's duration is logged when its answer is ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use berth_services::namespace_header::NAMESPACE_HEADER;
use tower::{Layer, Service};
use tracing::Instrument as _;

/// Adds [`RequestSpan`] to a service stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpanLayer;

impl<S> Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan { inner }
    }
}

/// Runs each request inside a `grpc` span.
#[derive(Clone, Debug)]
pub struct RequestSpan<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RequestSpan<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let namespace = request
            .headers()
            .get(NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let span = tracing::debug_span!("grpc", method = %request.uri().path(), namespace = %namespace);
        let started = Instant::now();
        let answer = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let output = answer.await;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            span.in_scope(|| tracing::debug!(elapsed_ms, "answered"));
            output
        })
    }
}
