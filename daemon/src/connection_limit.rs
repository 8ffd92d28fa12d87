//! A cap on open API connections (`[grpc] max_connections`), shared by
//! the Unix socket and the TCP listener.
//!
//! Past the cap a new connection is accepted and closed at once, rather
//! than left in the listen queue: a client that opens connections in a
//! loop then costs the daemon no descriptors beyond the cap, and the
//! connections already open (`ctr`, a kubelet) keep being served.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared count of open connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    open: Arc<Semaphore>,
    max: usize,
}

impl ConnectionLimit {
    /// At most `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The connection, counted, or None (it is dropped, which closes it)
    /// when `max` are open.
    pub fn admit<S>(&self, connection: S) -> Option<Counted<S>> {
        match Arc::clone(&self.open).try_acquire_owned() {
            Ok(permit) => Some(Counted {
                inner: connection,
                _permit: permit,
            }),
            Err(_) => {
                tracing::warn!(max = self.max, "connection refused: grpc.max_connections are open");
                None
            }
        }
    }
}

/// A connection that holds its place in the count until it is dropped.
pub struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::write_through::write_through!(Counted);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_free_up_when_connections_close() {
        let limit = ConnectionLimit::new(2);
        let first = limit.admit(1).unwrap();
        let _second = limit.admit(2).unwrap();
        assert!(limit.admit(3).is_none());
        drop(first);
        assert!(limit.admit(4).is_some());
    }
}
