//! A bound on what the tar reader may take into memory between entries.
//!
//! The tar reader holds a GNU long name, a long link name and PAX records
//! in memory whole, as large as their headers say, and a GNU sparse entry's
//! map grows with every extension block: a few kilobytes of gzip can ask
//! for gigabytes. Everything the reader consumes while it looks for the
//! next entry (its header, those records, the padding between them) is
//! read through [`Budgeted`], which refuses past [`MAX_ENTRY_METADATA`]
//! bytes, as Go's archive/tar refuses such records over 1 MiB. The entry's
//! data is read outside that window and is not bounded here (it streams).

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// The most bytes that one entry's headers and records may take together.
pub const MAX_ENTRY_METADATA: u64 = 1 << 20;

/// Room for the header blocks and padding around records at the limit.
const FRAMING: u64 = 16 << 10;

/// The message of the error a [`Budgeted`] reader returns past its budget.
pub const OVER_BUDGET: &str = "a tar header (GNU long name or link, PAX records or sparse map) exceeds 1 MiB";

/// Opens and closes the window in which reads are counted.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Bytes still allowed, while the window is open.
    remaining: Rc<Cell<Option<u64>>>,
}

impl Window {
    /// Counts reads from now on, up to the limit.
    pub fn open(&self) {
        self.remaining.set(Some(MAX_ENTRY_METADATA + FRAMING));
    }

    /// Stops counting: what follows is an entry's data.
    pub fn close(&self) {
        self.remaining.set(None);
    }
}

/// A reader that fails once an open [`Window`] has used its budget.
#[derive(Debug)]
pub struct Budgeted<R> {
    inner: R,
    window: Window,
}

impl<R: Read> Budgeted<R> {
    /// Wraps `inner`; reads are bounded while `window` is open.
    pub fn new(inner: R, window: Window) -> Self {
        Self { inner, window }
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(remaining) = self.window.remaining.get() else {
            return self.inner.read(buf);
        };
        if remaining == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, OVER_BUDGET));
        }
        let allowed = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
        let n = self.inner.read(&mut buf[..allowed])?;
        self.window.remaining.set(Some(remaining - n as u64));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_unbounded_while_the_window_is_closed() {
        let window = Window::default();
        let data = vec![1u8; 3 << 20];
        let mut reader = Budgeted::new(data.as_slice(), window.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 3 << 20);
    }

    #[test]
    fn an_open_window_refuses_past_its_budget_and_resets_when_reopened() {
        let window = Window::default();
        let data = vec![1u8; 3 << 20];
        let mut reader = Budgeted::new(data.as_slice(), window.clone());
        window.open();
        let mut small = vec![0u8; 4096];
        reader.read_exact(&mut small).unwrap();
        window.open();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.to_string(), OVER_BUDGET);
        assert_eq!(out.len() as u64, MAX_ENTRY_METADATA + FRAMING);
        window.close();
        reader.read_exact(&mut small).unwrap();
    }
}
