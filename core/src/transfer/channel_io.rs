//! Blocking readers and writers over channels of byte chunks: the archive
//! code reads and writes tars with blocking I/O on a blocking thread,
//! while the bytes come from, or go to, a client's stream on the runtime.

use std::io::{Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::Error;

/// Reads the chunks a channel carries, in order; an error sent down the
/// channel ends the read with that error. Call only off the runtime.
pub struct ChannelReader {
    chunks: mpsc::Receiver<Result<Bytes, Error>>,
    current: Bytes,
}

impl ChannelReader {
    /// Reads what arrives on `chunks` until its senders are gone.
    pub fn new(chunks: mpsc::Receiver<Result<Bytes, Error>>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buffer.len().min(self.current.len());
        buffer[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Bytes written a chunk at a time into a channel. Call only off the
/// runtime.
pub struct ChannelWriter {
    chunks: mpsc::Sender<Bytes>,
    pending: Vec<u8>,
}

/// How much is gathered before a chunk goes.
const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    /// Writes into `chunks`; a receiver gone makes writes fail.
    pub fn new(chunks: mpsc::Sender<Bytes>) -> Self {
        Self {
            chunks,
            pending: Vec::with_capacity(CHUNK),
        }
    }

    fn send_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK)));
        self.chunks
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the receiving stream is gone"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&data[..n]);
        if self.pending.len() == CHUNK {
            self.send_pending()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_in_order_and_an_error_ends_the_read() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"hello "))).unwrap();
        sender.try_send(Ok(Bytes::from_static(b"world"))).unwrap();
        drop(sender);
        let mut text = String::new();
        ChannelReader::new(receiver).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");

        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"part"))).unwrap();
        sender.try_send(Err(Error::unavailable("cut off"))).unwrap();
        let mut data = Vec::new();
        let error = ChannelReader::new(receiver).read_to_end(&mut data).unwrap_err();
        assert!(error.to_string().contains("cut off"), "{error}");
    }

    #[test]
    fn writes_arrive_as_chunks_once_flushed() {
        let (sender, mut receiver) = mpsc::channel(64);
        let mut writer = ChannelWriter::new(sender);
        writer.write_all(&vec![7u8; CHUNK + 10]).unwrap();
        writer.flush().unwrap();
        drop(writer);
        let mut total = 0;
        while let Some(chunk) = receiver.blocking_recv() {
            total += chunk.len();
        }
        assert_eq!(total, CHUNK + 10);
    }
}
