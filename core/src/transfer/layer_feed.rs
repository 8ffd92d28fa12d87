//! A layer's bytes while its download writes them, so the unpacker can
//! decompress and apply a layer before the download ends.
//!
//! The download writes each batch to its ingest and then tells the feed
//! how far the ingest's data reaches; a reader follows behind it on its
//! own descriptor of that data file (the bytes are in the page cache, just
//! written), blocking while it has caught up. Nothing is buffered twice and
//! the download never waits for the apply. The bytes a reader sees are not
//! verified yet: the download's commit checks the digest, and the unpacker
//! commits no snapshot before that commit succeeded.
//!
//! A download that starts over from byte 0 (a registry that ignored a
//! range request) breaks the feed: readers fail and later ones are
//! refused, and the unpacker applies the committed blob instead.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Condvar, Mutex};

/// One layer's download as a byte stream for readers.
#[derive(Debug, Default)]
pub struct LayerFeed {
    state: Mutex<FeedState>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct FeedState {
    /// The ingest's data file, once the download opened it.
    data: Option<Arc<File>>,
    /// Bytes of the data file written so far.
    written: u64,
    /// The download restarted from 0: what readers read is not the blob.
    broken: bool,
    /// The download ended (committed, failed or cancelled).
    ended: bool,
}

impl LayerFeed {
    /// A feed for a download that has not started.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn update(&self, change: impl FnOnce(&mut FeedState)) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut state);
        drop(state);
        self.moved.notify_all();
    }

    /// The download opened its ingest: `data` reads it, and holds
    /// `written` bytes already (a resumed ingest).
    pub fn opened(&self, data: File, written: u64) {
        self.update(|state| {
            state.data = Some(Arc::new(data));
            state.written = written;
        });
    }

    /// The ingest's data now reaches `written` bytes.
    pub fn reached(&self, written: u64) {
        self.update(|state| state.written = written);
    }

    /// The download started over from byte 0.
    pub fn restarted(&self) {
        self.update(|state| {
            state.broken = true;
            state.written = 0;
        });
    }

    /// The download ended, however it ended.
    pub fn ended(&self) {
        self.update(|state| state.ended = true);
    }

    /// A reader of the layer's `size` bytes from the start, or None when
    /// the feed cannot give them (the download ended or broke).
    pub fn subscribe(self: &Arc<Self>, size: u64) -> Option<FeedReader> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.ended || state.broken {
            return None;
        }
        Some(FeedReader {
            feed: Arc::clone(self),
            size,
            position: 0,
        })
    }
}

/// Ends the feed when the download's task ends, even when it is aborted.
#[derive(Debug)]
pub struct FeedEnd(pub Arc<LayerFeed>);

impl Drop for FeedEnd {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// Reads a layer from its feed, blocking until the download has written
/// the next bytes. For a blocking thread only.
#[derive(Debug)]
pub struct FeedReader {
    feed: Arc<LayerFeed>,
    size: u64,
    position: u64,
}

impl FeedReader {
    /// The data file and how far it reaches, once there is more to read.
    fn wait_for_more(&self) -> io::Result<Option<(Arc<File>, u64)>> {
        let mut state = self.feed.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if state.broken {
                return Err(io::Error::other("the layer's download started over"));
            }
            if let Some(data) = &state.data
                && state.written > self.position
            {
                return Ok(Some((Arc::clone(data), state.written.min(self.size))));
            }
            if state.ended {
                return Ok(None);
            }
            state = self
                .feed
                .moved
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let Some((data, reach)) = self.wait_for_more()? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the layer's download ended at {} of {} bytes", self.position, self.size),
            ));
        };
        let want = usize::try_from(reach - self.position)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = data.read_at(&mut buf[..want], self.position)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the layer's data ends at {} of {} bytes", self.position, self.size),
            ));
        }
        self.position += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_reader_follows_the_writer_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let mut file = File::create(&path).unwrap();
        let feed = LayerFeed::new();
        let mut reader = feed.subscribe(8).unwrap();
        let writer = {
            let feed = Arc::clone(&feed);
            std::thread::spawn(move || {
                feed.opened(File::open(&path).unwrap(), 0);
                for (i, part) in [b"abc".as_slice(), b"defgh"].into_iter().enumerate() {
                    std::thread::sleep(std::time::Duration::from_millis(20 * i as u64));
                    file.write_all(part).unwrap();
                    feed.reached(file.metadata().unwrap().len());
                }
                feed.ended();
            })
        };
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        writer.join().unwrap();
        assert_eq!(all, b"abcdefgh");
        assert!(feed.subscribe(8).is_none(), "an ended feed takes no reader");
    }

    #[test]
    fn a_download_that_ends_early_or_starts_over_fails_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"abc").unwrap();
        let feed = LayerFeed::new();
        let mut reader = feed.subscribe(8).unwrap();
        feed.opened(File::open(&path).unwrap(), 3);
        feed.ended();
        let mut all = Vec::new();
        let e = reader.read_to_end(&mut all).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(all, b"abc");

        let feed = LayerFeed::new();
        let mut reader = feed.subscribe(8).unwrap();
        feed.opened(File::open(&path).unwrap(), 3);
        feed.restarted();
        assert!(reader.read(&mut [0u8; 8]).is_err());
        assert!(feed.subscribe(8).is_none(), "a broken feed takes no reader");
    }
}
