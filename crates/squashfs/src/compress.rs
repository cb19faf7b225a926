//! Block decompression: every metadata and data block is decompressed into a buffer of
//! its known bound (8 KiB for metadata, the block size for data), so no block can expand
//! past it whatever its header or stream claims.

use diskcast_block::{Error, Result};

/// Most memory liblzma may use to decode one xz block. mksquashfs's dictionary is at most
/// the block size (1 MiB), which needs about 1.1 MiB; a hostile stream header asking for
/// more is refused instead of allocated.
const XZ_MEMORY_LIMIT: u64 = 16 << 20;

/// The compressors of squashfs 4.0 (`compression` field of the superblock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// zlib streams (id 1).
    Gzip,
    /// LZO1X (id 3).
    Lzo,
    /// xz streams, with any filter chain liblzma knows (id 4).
    Xz,
    /// LZ4 blocks (id 5).
    Lz4,
    /// zstd frames (id 6).
    Zstd,
}

impl Compressor {
    /// The compressor with squashfs id `id`; legacy lzma (2) and unknown ids are refused
    /// by name.
    pub fn from_id(id: u16) -> Result<Self> {
        Ok(match id {
            1 => Compressor::Gzip,
            3 => Compressor::Lzo,
            4 => Compressor::Xz,
            5 => Compressor::Lz4,
            6 => Compressor::Zstd,
            2 => {
                return Err(Error::unsupported(
                    "squashfs compressed with lzma (the legacy LZMA-alone format, before xz) is not supported; \
                     gzip, lzo, xz, lz4 and zstd are",
                )
                .with_field("compression"));
            }
            n => {
                return Err(
                    Error::unsupported(format!("squashfs compressor id {n} is unknown")).with_field("compression")
                );
            }
        })
    }

    /// Its name as `mksquashfs -comp` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Gzip => "gzip",
            Compressor::Lzo => "lzo",
            Compressor::Xz => "xz",
            Compressor::Lz4 => "lz4",
            Compressor::Zstd => "zstd",
        }
    }

    /// Decompresses `src` into `out` and returns how many bytes it produced. A stream
    /// that would produce more than `out.len()` bytes is an error, never a larger buffer.
    pub fn decompress(self, src: &[u8], out: &mut [u8]) -> Result<usize> {
        let bound = out.len();
        let overflow =
            || Error::corrupt(format!("{} block decompresses to more than its bound of {bound} bytes", self.name()));
        let bad = |e: String| Error::corrupt(format!("{} block cannot be decompressed: {e}", self.name()));
        match self {
            Compressor::Gzip => {
                use flate2::{Decompress, FlushDecompress, Status};
                let mut d = Decompress::new(true);
                let status = d.decompress(src, out, FlushDecompress::Finish).map_err(|e| bad(e.to_string()))?;
                let n = usize::try_from(d.total_out()).map_err(|_| overflow())?;
                match status {
                    Status::StreamEnd => Ok(n),
                    _ if n >= bound => Err(overflow()),
                    _ => Err(bad("the zlib stream ends early".into())),
                }
            }
            Compressor::Xz => {
                use liblzma::stream::{Action, Status, Stream};
                let mut s = Stream::new_stream_decoder(XZ_MEMORY_LIMIT, 0).map_err(|e| bad(e.to_string()))?;
                let status = s.process(src, out, Action::Finish).map_err(|e| match e {
                    liblzma::stream::Error::MemLimit => {
                        bad(format!("the stream needs more than {XZ_MEMORY_LIMIT} bytes of memory (XZ_MEMORY_LIMIT)"))
                    }
                    e => bad(e.to_string()),
                })?;
                let n = usize::try_from(s.total_out()).map_err(|_| overflow())?;
                match status {
                    Status::StreamEnd => Ok(n),
                    _ if n >= bound => Err(overflow()),
                    _ => Err(bad("the xz stream ends early".into())),
                }
            }
            Compressor::Zstd => {
                let mut d = zstd::bulk::Decompressor::new().map_err(|e| bad(e.to_string()))?;
                // zstd reports a too-small buffer as an error: check the frame's declared
                // size first so a bomb gets the clear message.
                if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(src)
                    && size > u64::try_from(bound).unwrap_or(u64::MAX)
                {
                    return Err(overflow());
                }
                d.decompress_to_buffer(src, out).map_err(|e| bad(e.to_string()))
            }
            Compressor::Lz4 => lz4_flex::block::decompress_into(src, out).map_err(|e| match e {
                lz4_flex::block::DecompressError::OutputTooSmall { .. } => overflow(),
                e => bad(e.to_string()),
            }),
            Compressor::Lzo => lzokay::decompress::decompress(src, out).map_err(|e| match e {
                lzokay::Error::OutputOverrun => overflow(),
                e => bad(format!("{e:?}")),
            }),
        }
    }
}
