//! Layer media types and their compression.

use std::io::{BufRead, BufReader, Read};

use berth_core::{Error, Result};

/// How a layer's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// Media type of an uncompressed OCI layer: what Apply reports as applied.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip OCI layer: what Diff writes by default.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// The compression a layer media type announces; NotImplemented for media
/// types that are not layers berth can apply (encrypted ones included).
pub fn of_media_type(media_type: &str) -> Result<Compression> {
    match media_type {
        OCI_LAYER_TAR
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        OCI_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
        other => Err(Error::not_implemented(format!("unsupported diff media type {other:?}"))),
    }
}

/// Detects the compression from the first bytes, as containerd does (the
/// media type is only checked to be a layer type).
fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// The decompressed bytes of `reader`, whatever it is compressed with.
pub fn decompress(reader: impl Read + Send + 'static) -> Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::with_capacity(1 << 20, reader);
    let head = buffered.fill_buf().map_err(|e| Error::io("reading the layer", &e))?;
    Ok(match detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| Error::io("starting zstd", &e))?)
        }
        Compression::None => Box::new(buffered),
    })
}

/// Compresses into `out` as `compression` says.
pub fn compressor(
    compression: Compression,
    out: Box<dyn std::io::Write + Send>,
) -> Result<Box<dyn FinishWrite + Send>> {
    Ok(match compression {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(out, flate2::Compression::default())),
        Compression::Zstd => {
            Box::new(zstd::stream::write::Encoder::new(out, 3).map_err(|e| Error::io("starting zstd", &e))?)
        }
    })
}

/// A writer whose end must be marked (compressors write trailers).
pub trait FinishWrite: std::io::Write {
    /// Writes any trailer and flushes.
    fn finish_write(self: Box<Self>) -> std::io::Result<()>;
}

struct Plain(Box<dyn std::io::Write + Send>);

impl std::io::Write for Plain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl FinishWrite for Plain {
    fn finish_write(mut self: Box<Self>) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<W: std::io::Write> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish_write(self: Box<Self>) -> std::io::Result<()> {
        let mut inner = (*self).finish()?;
        inner.flush()
    }
}

impl<W: std::io::Write> FinishWrite for zstd::stream::write::Encoder<'static, W> {
    fn finish_write(self: Box<Self>) -> std::io::Result<()> {
        let mut inner = (*self).finish()?;
        inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn media_types() {
        assert_eq!(
            of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(of_media_type(OCI_LAYER_TAR).unwrap(), Compression::None);
        assert_eq!(of_media_type(OCI_LAYER_ZSTD).unwrap(), Compression::Zstd);
        let err = of_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").unwrap_err();
        assert_eq!(err.kind(), berth_core::ErrorKind::NotImplemented);
    }

    #[test]
    fn every_compression_round_trips() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
            impl std::io::Write for Shared {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let mut writer = compressor(compression, Box::new(Shared(buffer.clone()))).unwrap();
            writer.write_all(b"layer bytes").unwrap();
            writer.finish_write().unwrap();
            let bytes = buffer.lock().unwrap().clone();
            let mut out = Vec::new();
            decompress(std::io::Cursor::new(bytes))
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, b"layer bytes", "{compression:?}");
        }
    }
}
