//! Bytes over a Streaming stream, with containerd's flow control: the
//! receiver grants the sender windows (`WindowUpdate`), the sender sends
//! `Data` messages of at most 32 KiB within what it was granted. Import
//! archives arrive this way; exports leave this way.

use std::sync::Arc;

use berth_api::any::{self, type_name};
use berth_api::containerd::types::transfer::{Data, WindowUpdate};
use berth_core::Error;
use berth_core::transfer::channel_io::ChannelReader;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::streaming::StreamHandle;

/// The most one Data message carries.
const MAX_DATA: usize = 32 * 1024;
/// What the daemon keeps granted to a sender: a few chunks in flight.
const WINDOW: i64 = 1 << 20;
/// Chunks buffered between the stream and the reader.
const BUFFERED: usize = 16;

/// The bytes a client sends on `stream`, as a blocking reader; dropping
/// the returned task's handle does not stop it, aborting it does.
pub fn receive(stream: Arc<StreamHandle>) -> (ChannelReader, tokio::task::JoinHandle<()>) {
    let (chunks, receiver) = mpsc::channel(BUFFERED);
    let pump = tokio::spawn(async move {
        let mut granted: i64 = 0;
        loop {
            if granted < WINDOW / 2 {
                let update = WINDOW - granted;
                let message = WindowUpdate {
                    update: i32::try_from(update).unwrap_or(i32::MAX),
                };
                if !stream.send(any::pack(&message)) {
                    let _ = chunks.send(Err(closed(&stream))).await;
                    return;
                }
                granted += update;
            }
            let message = match stream.recv_checked().await {
                Ok(Some(message)) => message,
                // The client closed its side: the end of the bytes.
                Ok(None) => return,
                Err(e) => {
                    let _ = chunks.send(Err(e)).await;
                    return;
                }
            };
            let Some(data) = any::unpack::<Data>(&message) else {
                let e = Error::invalid_argument(format!(
                    "stream {:?} carried a {}, not Data",
                    stream.id,
                    type_name(&message.type_url)
                ));
                let _ = chunks.send(Err(e)).await;
                return;
            };
            granted -= data.data.len() as i64;
            if chunks.send(Ok(Bytes::from(data.data))).await.is_err() {
                return;
            }
        }
    });
    (ChannelReader::new(receiver), pump)
}

/// Sends what arrives on `chunks` to the client on `stream`, within the
/// windows it grants.
pub async fn send(stream: &StreamHandle, mut chunks: mpsc::Receiver<Bytes>) -> Result<(), Error> {
    let mut window: i64 = 0;
    while let Some(mut chunk) = chunks.recv().await {
        while !chunk.is_empty() {
            while window <= 0 {
                let message = stream.recv_checked().await?.ok_or_else(|| closed(stream))?;
                if let Some(update) = any::unpack::<WindowUpdate>(&message) {
                    window += i64::from(update.update);
                }
            }
            let n = chunk
                .len()
                .min(MAX_DATA)
                .min(usize::try_from(window).unwrap_or(MAX_DATA));
            let part = chunk.split_to(n);
            if !stream.send(any::pack(&Data { data: part.to_vec() })) {
                return Err(closed(stream));
            }
            window -= n as i64;
        }
    }
    Ok(())
}

fn closed(stream: &StreamHandle) -> Error {
    Error::unavailable(format!("stream {:?} closed before the transfer ended", stream.id))
}
