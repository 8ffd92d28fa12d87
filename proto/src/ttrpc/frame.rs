//! ttrpc frames: a 10-byte header, then the data.
//!
//! Header layout (all big-endian): bytes 0..4 data length, 4..8 stream id,
//! byte 8 message type, byte 9 flags. Data is at most 4 MiB; a longer frame
//! is read past and reported so the peer gets ResourceExhausted on that
//! stream instead of a dropped connection.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 10;

/// Largest data a frame may carry (4 MiB), as containerd's ttrpc enforces.
pub const MAX_DATA_LEN: u32 = 4 << 20;

/// Frame type byte: a request (client to server).
pub const KIND_REQUEST: u8 = 0x01;
/// Frame type byte: a response (server to client).
pub const KIND_RESPONSE: u8 = 0x02;
/// Frame type byte: stream data (streaming RPCs; berth serves unary calls only).
pub const KIND_DATA: u8 = 0x03;

/// The fixed header in front of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the data that follows, excluding the header.
    pub length: u32,
    /// The call this frame belongs to; client-initiated ids are odd.
    pub stream_id: u32,
    /// One of the `KIND_*` bytes (unknown kinds are skipped by readers).
    pub kind: u8,
    /// Stream flags; zero for unary calls.
    pub flags: u8,
}

impl FrameHeader {
    /// Serialises the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.length.to_be_bytes());
        out[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        out[8] = self.kind;
        out[9] = self.flags;
        out
    }

    /// Parses a header.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        Self {
            length: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            stream_id: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            kind: bytes[8],
            flags: bytes[9],
        }
    }
}

/// One frame as read from the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A frame within the size limit, with its data.
    Complete(FrameHeader, Vec<u8>),
    /// A frame whose data exceeded [`MAX_DATA_LEN`]; the data was skipped.
    Oversized(FrameHeader),
}

/// Reads the next frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    // A clean EOF is only one that happens before the first header byte.
    let first = reader.read(&mut header[..]).await?;
    if first == 0 {
        return Ok(None);
    }
    if first < HEADER_LEN {
        reader.read_exact(&mut header[first..]).await?;
    }
    let header = FrameHeader::decode(&header);
    if header.length > MAX_DATA_LEN {
        let skipped = tokio::io::copy(&mut reader.take(u64::from(header.length)), &mut tokio::io::sink()).await?;
        if skipped < u64::from(header.length) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Some(Frame::Oversized(header)));
    }
    let mut data = vec![0u8; header.length as usize];
    reader.read_exact(&mut data).await?;
    Ok(Some(Frame::Complete(header, data)))
}

/// Writes one frame and flushes it. Refuses data over [`MAX_DATA_LEN`]
/// rather than sending a frame every peer would reject.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    stream_id: u32,
    kind: u8,
    flags: u8,
    data: &[u8],
) -> io::Result<()> {
    let length = u32::try_from(data.len())
        .ok()
        .filter(|len| *len <= MAX_DATA_LEN)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ttrpc message of {} bytes exceeds the maximum of {MAX_DATA_LEN} bytes",
                    data.len()
                ),
            )
        })?;
    let header = FrameHeader {
        length,
        stream_id,
        kind,
        flags,
    };
    // One write for header and data keeps small frames in one segment.
    let mut buf = Vec::with_capacity(HEADER_LEN + data.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(data);
    writer.write_all(&buf).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_big_endian_length_id_type_flags() {
        let header = FrameHeader {
            length: 0x0102_0304,
            stream_id: 0x0506_0708,
            kind: KIND_REQUEST,
            flags: 0x0a,
        };
        assert_eq!(header.encode(), [1, 2, 3, 4, 5, 6, 7, 8, KIND_REQUEST, 0x0a]);
        assert_eq!(FrameHeader::decode(&header.encode()), header);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, 3, KIND_RESPONSE, 0, b"hello").await.unwrap();
        write_frame(&mut wire, 5, KIND_REQUEST, 0, b"").await.unwrap();
        assert_eq!(wire.len(), 2 * HEADER_LEN + 5);
        let mut reader = wire.as_slice();
        let first = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(
            first,
            Frame::Complete(
                FrameHeader {
                    length: 5,
                    stream_id: 3,
                    kind: KIND_RESPONSE,
                    flags: 0
                },
                b"hello".to_vec()
            )
        );
        let second = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(second, Frame::Complete(h, d) if h.stream_id == 5 && d.is_empty()));
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn data_at_the_limit_is_accepted_and_over_it_refused() {
        let mut wire = Vec::new();
        let at_limit = vec![7u8; MAX_DATA_LEN as usize];
        write_frame(&mut wire, 1, KIND_REQUEST, 0, &at_limit).await.unwrap();
        let over = vec![0u8; MAX_DATA_LEN as usize + 1];
        let err = write_frame(&mut Vec::new(), 1, KIND_REQUEST, 0, &over)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut reader = wire.as_slice();
        match read_frame(&mut reader).await.unwrap().unwrap() {
            Frame::Complete(h, d) => {
                assert_eq!(h.length, MAX_DATA_LEN);
                assert_eq!(d.len(), MAX_DATA_LEN as usize);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_frames_are_skipped_and_reported() {
        let length = MAX_DATA_LEN + 10;
        let mut wire = FrameHeader {
            length,
            stream_id: 9,
            kind: KIND_REQUEST,
            flags: 0,
        }
        .encode()
        .to_vec();
        wire.extend(std::iter::repeat_n(0u8, length as usize));
        write_frame(&mut wire, 11, KIND_REQUEST, 0, b"next").await.unwrap();
        let mut reader = wire.as_slice();
        let frame = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(frame, Frame::Oversized(h) if h.stream_id == 9));
        let next = read_frame(&mut reader).await.unwrap().unwrap();
        assert!(matches!(next, Frame::Complete(h, d) if h.stream_id == 11 && d == b"next"));
    }

    #[tokio::test]
    async fn truncated_frames_are_errors_not_eof() {
        let mut wire = Vec::new();
        write_frame(&mut wire, 1, KIND_REQUEST, 0, b"abcdef").await.unwrap();
        wire.truncate(HEADER_LEN + 2);
        let err = read_frame(&mut wire.as_slice()).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_frame(&mut &wire[..4]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
