//! A call's deadline ends it with DEADLINE_EXCEEDED, as containerd answers.
//!
//! A client states its deadline in the `grpc-timeout` header. The HTTP/2
//! server under tonic enforces it too, but answers CANCELLED ("Timeout
//! expired"); a client whose own timer has not fired yet (a busy host, a
//! slow runtime) then sees CANCELLED where containerd gives it
//! DEADLINE_EXCEEDED. [`Deadline`] runs inside that and ends the call first:
//! its timer starts when the request reaches it (as the server's does) and
//! is set a little short of the stated timeout, since the client's deadline began before its
//! request crossed the socket. As with tonic's, only the wait for the
//! answer's headers is timed; a stream already answering runs on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

/// The header a client's deadline comes in.
const TIMEOUT_HEADER: &str = "grpc-timeout";

/// How much sooner than the stated timeout the call ends.
const MARGIN: Duration = Duration::from_millis(2);

/// Answers DEADLINE_EXCEEDED when a call outlives its `grpc-timeout`.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Deadline<S> {
    /// Times the calls `inner` answers.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let timeout = request
            .headers()
            .get(TIMEOUT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        // Timed from now, not from the future's first poll, which may come
        // later on a busy runtime: the server's own timer starts now too.
        let deadline = timeout.map(|t| (t, tokio::time::Instant::now() + t.saturating_sub(MARGIN)));
        let answer = self.inner.call(request);
        let Some((timeout, deadline)) = deadline else {
            return Box::pin(answer);
        };
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(answered) => answered,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the call's deadline ({timeout:?}) passed before it was answered"
                ))
                .into_http()),
            }
        })
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use tower::Service as _;

    use super::{Deadline, parse_timeout};

    type Answer = Result<http::Response<tonic::body::Body>, Infallible>;

    #[tokio::test]
    async fn a_call_past_its_timeout_is_answered_deadline_exceeded() {
        let mut never = Deadline::new(tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<Answer>()
        }));
        let request = http::Request::builder().header("grpc-timeout", "50m").body(()).unwrap();
        let started = Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(5), never.call(request))
            .await
            .expect("no answer at the deadline")
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "4", "{response:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "{:?}",
            started.elapsed()
        );

        // In time, or with no deadline: the service's own answer.
        let answer = || async { Answer::Ok(http::Response::new(tonic::body::Body::default())) };
        let mut ready = Deadline::new(tower::service_fn(|_: http::Request<()>| answer()));
        let in_time = http::Request::builder().header("grpc-timeout", "5S").body(()).unwrap();
        for request in [in_time, http::Request::new(())] {
            let response = ready.call(request).await.unwrap();
            assert!(response.headers().get("grpc-status").is_none(), "{response:?}");
        }
    }

    #[test]
    fn timeouts_parse_as_the_protocol_writes_them() {
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1999m"), Some(Duration::from_millis(1999)));
        assert_eq!(parse_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("S"), None);
        assert_eq!(parse_timeout("123456789S"), None);
        assert_eq!(parse_timeout("1x"), None);
        assert_eq!(parse_timeout("-1S"), None);
    }
}
