//! Any `:authority` on the Unix socket.
//!
//! On a Unix socket the HTTP/2 `:authority` names nothing, and clients
//! fill it as they please: grpc-go sends `localhost`, gRPC's C core
//! (Python, C++, Ruby, PHP, C#) the percent-encoded socket path, grpc-java
//! the raw path, some an empty string. The HTTP/2 server under tonic
//! accepts only an RFC 3986 authority and resets every other stream with
//! PROTOCOL_ERROR, so those clients could not make a single call.
//!
//! [`AnyAuthority`] wraps each accepted connection and reads the client's
//! HTTP/2 frames on their way in. Header blocks are decoded (HPACK, with
//! the client's dynamic table kept in step); while every `:authority` is
//! one the server takes, the client's bytes go through untouched. From the
//! first block that carries another, every header block of the connection
//! is re-encoded without the dynamic table (literal fields only, which a
//! decoder reads whatever its table holds), with that authority replaced
//! by `localhost`. Everything else (data, settings, pings, resets) passes
//! through as it came. What cannot be decoded is passed on as it is, for
//! the server to refuse.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BufMut as _, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

/// The connection preface every HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HEADERS and CONTINUATION frame types.
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// Frame flags.
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// floor): rewritten blocks are cut to it.
const SAFE_FRAME: usize = 16_384;
/// The dynamic table size the server allows the client's encoder (the
/// HTTP/2 default, which the server does not change).
const TABLE_SIZE: usize = 4096;
/// Largest header block decoded; a bigger one goes through as it came (the
/// server's own header list limit refuses it).
const MAX_BLOCK: usize = 1 << 20;
/// What replaces an authority the server would refuse.
const REPLACEMENT: &[u8] = b"localhost";

/// A connection whose incoming header blocks carry only authorities the
/// HTTP/2 server accepts (see the module documentation).
pub struct AnyAuthority<S> {
    inner: S,
    reader: FrameReader,
}

impl<S> AnyAuthority<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reader: FrameReader::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.reader.output.is_empty() {
                let n = this.reader.output.len().min(buf.remaining());
                buf.put_slice(&this.reader.output[..n]);
                this.reader.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            // The bulk of a data frame: straight into the caller's buffer.
            if let Some(n) = this.reader.direct_bytes() {
                let mut limited = buf.take(n);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                let read = limited.filled().len();
                // SAFETY: `limited` is `buf`'s unfilled part, and the read
                // initialised its first `read` bytes.
                unsafe { buf.assume_init(read) };
                buf.advance(read);
                this.reader.consumed_directly(read);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16_384];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
            if chunk_buf.filled().is_empty() {
                // End of stream: whatever is held goes on as it is.
                this.reader.flush_raw();
                if this.reader.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.reader.feed(chunk_buf.filled());
        }
    }
}

crate::write_through::write_through!(AnyAuthority);

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Before the connection preface.
    Preface,
    /// At a frame header.
    FrameStart,
    /// Inside the payload of a frame that goes through as it is.
    Payload(usize),
    /// Given up (not HTTP/2 as expected, or a block that cannot be
    /// decoded): everything goes through as it is.
    Raw,
}

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct PendingBlock {
    stream: u32,
    /// HEADERS flags (END_STREAM matters).
    flags: u8,
    /// The HEADERS frame's priority fields, if it had them.
    priority: Option<[u8; 5]>,
    /// The frames as they came (sent on unchanged when nothing needs it).
    raw: BytesMut,
    /// The block fragment, concatenated.
    fragment: BytesMut,
}

/// The byte-stream transformation, apart from any I/O so it can be tested
/// on its own.
struct FrameReader {
    position: Position,
    /// Client bytes not yet looked at.
    input: BytesMut,
    /// Bytes ready for the server.
    output: BytesMut,
    pending: Option<PendingBlock>,
    decoder: loona_hpack::Decoder<'static>,
    /// Once a block was rewritten, every later one is too (the server's
    /// dynamic table no longer matches the client's).
    rewriting: bool,
}

impl FrameReader {
    fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            position: Position::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            pending: None,
            decoder,
            rewriting: false,
        }
    }

    /// How many payload bytes may be read straight to the server now.
    fn direct_bytes(&self) -> Option<usize> {
        match self.position {
            Position::Payload(n) if self.input.is_empty() && n > 0 => Some(n),
            Position::Raw if self.input.is_empty() => Some(usize::MAX),
            _ => None,
        }
    }

    fn consumed_directly(&mut self, n: usize) {
        if let Position::Payload(left) = self.position {
            self.position = if left == n {
                Position::FrameStart
            } else {
                Position::Payload(left - n)
            };
        }
    }

    /// Gives up on a connection: what is held goes through as it came.
    fn flush_raw(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.output.extend_from_slice(&pending.raw);
        }
        let input = self.input.split();
        self.output.extend_from_slice(&input);
        self.position = Position::Raw;
    }

    /// Takes client bytes and moves what can be decided to the output.
    fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            match self.position {
                Position::Raw => {
                    let input = self.input.split();
                    self.output.extend_from_slice(&input);
                    return;
                }
                Position::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.flush_raw();
                        return;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    let preface = self.input.split_to(n);
                    self.output.extend_from_slice(&preface);
                    self.position = Position::FrameStart;
                }
                Position::Payload(left) => {
                    if self.input.is_empty() {
                        return;
                    }
                    let n = left.min(self.input.len());
                    let part = self.input.split_to(n);
                    self.output.extend_from_slice(&part);
                    self.position = if n == left {
                        Position::FrameStart
                    } else {
                        Position::Payload(left - n)
                    };
                }
                Position::FrameStart => {
                    if self.input.len() < 9 {
                        return;
                    }
                    let length = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
                    let kind = self.input[3];
                    let in_block = self.pending.is_some();
                    let header_frame = kind == HEADERS || kind == CONTINUATION;
                    if !header_frame && !in_block {
                        let header = self.input.split_to(9);
                        self.output.extend_from_slice(&header);
                        self.position = Position::Payload(length);
                        continue;
                    }
                    // A frame inside a block that is not its continuation,
                    // or one too big to hold: the server's to refuse.
                    if kind != CONTINUATION && in_block || kind == CONTINUATION && !in_block || length > MAX_BLOCK {
                        self.flush_raw();
                        return;
                    }
                    if self.input.len() < 9 + length {
                        return;
                    }
                    let frame = self.input.split_to(9 + length);
                    if !self.header_frame(frame) {
                        self.flush_raw();
                        return;
                    }
                }
            }
        }
    }

    /// Takes a whole HEADERS or CONTINUATION frame; false when the
    /// connection must be given up.
    fn header_frame(&mut self, frame: BytesMut) -> bool {
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        if frame[3] == HEADERS {
            let mut start = 0;
            let mut end = payload.len();
            if flags & PADDED != 0 {
                let Some(&pad) = payload.first() else { return false };
                start = 1;
                let Some(e) = end.checked_sub(pad as usize) else {
                    return false;
                };
                end = e;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let Some(fields) = payload.get(start..start + 5) else {
                    return false;
                };
                priority = Some(fields.try_into().expect("five bytes"));
                start += 5;
            }
            if start > end {
                return false;
            }
            self.pending = Some(PendingBlock {
                stream,
                flags,
                priority,
                raw: BytesMut::new(),
                fragment: BytesMut::from(&payload[start..end]),
            });
        } else {
            let Some(pending) = self.pending.as_mut() else {
                return false;
            };
            if pending.stream != stream || pending.fragment.len() + payload.len() > MAX_BLOCK {
                return false;
            }
            pending.fragment.extend_from_slice(payload);
        }
        let pending = self.pending.as_mut().expect("a block is pending");
        pending.raw.extend_from_slice(&frame);
        if flags & END_HEADERS == 0 {
            return true;
        }
        let block = self.pending.take().expect("a block is pending");
        self.finish_block(block)
    }

    /// Decodes a complete block and sends it on, as it came or rewritten.
    fn finish_block(&mut self, block: PendingBlock) -> bool {
        let Ok(fields) = self.decoder.decode(&block.fragment) else {
            // Put back for flush_raw to send as it came.
            self.pending = Some(block);
            return false;
        };
        let refused = fields
            .iter()
            .any(|(name, value)| name == b":authority" && !acceptable_authority(value));
        if refused {
            self.rewriting = true;
        }
        if !self.rewriting {
            self.output.extend_from_slice(&block.raw);
            return true;
        }
        let mut encoded = BytesMut::new();
        for (name, value) in &fields {
            let value: &[u8] = if name == b":authority" && !acceptable_authority(value) {
                REPLACEMENT
            } else {
                value
            };
            encode_literal(&mut encoded, name, value);
        }
        self.write_block(&block, encoded);
        true
    }

    /// Frames a rewritten block: HEADERS then CONTINUATIONs, each within
    /// the size every peer accepts.
    fn write_block(&mut self, block: &PendingBlock, mut encoded: BytesMut) {
        let room = SAFE_FRAME - if block.priority.is_some() { 5 } else { 0 };
        let first = encoded.split_to(encoded.len().min(room));
        let mut flags = block.flags & (END_STREAM | PRIORITY);
        if encoded.is_empty() {
            flags |= END_HEADERS;
        }
        let length = first.len() + if block.priority.is_some() { 5 } else { 0 };
        self.frame_header(length, HEADERS, flags, block.stream);
        if let Some(priority) = block.priority {
            self.output.extend_from_slice(&priority);
        }
        self.output.extend_from_slice(&first);
        while !encoded.is_empty() {
            let part = encoded.split_to(encoded.len().min(SAFE_FRAME));
            let flags = if encoded.is_empty() { END_HEADERS } else { 0 };
            self.frame_header(part.len(), CONTINUATION, flags, block.stream);
            self.output.extend_from_slice(&part);
        }
    }

    fn frame_header(&mut self, length: usize, kind: u8, flags: u8, stream: u32) {
        let length = (length as u32).to_be_bytes();
        self.output.extend_from_slice(&length[1..]);
        self.output.put_u8(kind);
        self.output.put_u8(flags);
        self.output.put_u32(stream);
    }
}

/// Whether the HTTP/2 server takes `value` as an authority.
fn acceptable_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

/// Appends a "literal header field without indexing, new name" (RFC 7541
/// section 6.2.2) with plain (not Huffman) strings.
fn encode_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    encode_string(out, name);
    encode_string(out, value);
}

/// A string literal: its length as a 7-bit-prefix integer, then the bytes.
fn encode_string(out: &mut BytesMut, bytes: &[u8]) {
    encode_integer(out, bytes.len(), 7, 0);
    out.extend_from_slice(bytes);
}

/// An HPACK integer (RFC 7541 section 5.1) with an `prefix`-bit prefix,
/// the first byte's other bits being `high`.
fn encode_integer(out: &mut BytesMut, mut value: usize, prefix: u32, high: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.put_u8(high | value as u8);
        return;
    }
    out.put_u8(high | max as u8);
    value -= max;
    while value >= 128 {
        out.put_u8((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &[u8], path: &str) -> Fields {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Splits what the reader produced back into frames and decodes each
    /// header block as the server would, with a table of its own.
    fn server_view(bytes: &[u8]) -> Vec<(u8, u32, Fields)> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut seen = Vec::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let payload = &rest[9..9 + length];
            rest = &rest[9 + length..];
            match kind {
                HEADERS | CONTINUATION => {
                    let mut fragment = payload;
                    if kind == HEADERS && flags & PADDED != 0 {
                        let pad = fragment[0] as usize;
                        fragment = &fragment[1..fragment.len() - pad];
                    }
                    if kind == HEADERS && flags & PRIORITY != 0 {
                        fragment = &fragment[5..];
                    }
                    block.extend_from_slice(fragment);
                    if flags & END_HEADERS != 0 {
                        seen.push((HEADERS, stream, decoder.decode(&block).expect("the server decodes it")));
                        block.clear();
                    }
                }
                other => seen.push((other, stream, vec![(payload.to_vec(), Vec::new())])),
            }
        }
        seen
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut reader = FrameReader::new();
        for part in input.chunks(chunk) {
            reader.feed(part);
        }
        reader.output.to_vec()
    }

    #[test]
    fn valid_authorities_go_through_byte_for_byte() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        for (stream, path) in [(1, "/a"), (3, "/b")] {
            let fields = request(b"localhost", path);
            let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
            input.extend(frame(HEADERS, END_HEADERS, stream, &block));
            input.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
        }
        for chunk in [1, 7, 4096] {
            assert_eq!(run(&input, chunk), input, "chunk {chunk}");
        }
    }

    #[test]
    fn refused_authorities_become_localhost_and_the_rest_is_kept() {
        // The client's encoder indexes fields, so later blocks refer to
        // entries the server never gets once blocks are rewritten.
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        let mut expected = Vec::new();
        let authorities: [&[u8]; 5] = [
            b"localhost",
            b"run%2Fberth%2Fberth.sock",
            b"/run/berth/berth.sock",
            b"",
            b"localhost",
        ];
        for (i, authority) in authorities.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            let fields = request(authority, &format!("/x/{i}"));
            let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
            // Padded and prioritised, split over a CONTINUATION.
            let (head, tail) = block.split_at(block.len() / 2);
            let mut payload = vec![3u8];
            payload.extend([0, 0, 0, 0, 16]);
            payload.extend_from_slice(head);
            payload.extend([0, 0, 0]);
            input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, stream, &payload));
            input.extend(frame(CONTINUATION, END_HEADERS, stream, tail));
            input.extend(frame(0x8, 0, stream, &[0, 0, 1, 0]));
            let mut want = fields.clone();
            for (name, value) in &mut want {
                if name == b":authority" && !acceptable_authority(value) {
                    *value = b"localhost".to_vec();
                }
            }
            expected.push((HEADERS, stream, want));
            expected.push((0x8, stream, vec![(vec![0, 0, 1, 0], Vec::new())]));
        }
        for chunk in [1, 5, 100_000] {
            assert_eq!(server_view(&run(&input, chunk)), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn what_is_not_http2_or_cannot_be_decoded_goes_through_as_it_came() {
        let junk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(run(&junk, 3), junk);
        let mut broken = PREFACE.to_vec();
        broken.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        broken.extend(frame(0x0, 0, 1, b"after"));
        assert_eq!(run(&broken, 4), broken);
    }

    #[test]
    fn integers_use_continuation_bytes_past_the_prefix() {
        let mut out = BytesMut::new();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(&out[..], [31, 154, 10]);
        out.clear();
        encode_integer(&mut out, 10, 7, 0x80);
        assert_eq!(&out[..], [0x8a]);
    }
}
