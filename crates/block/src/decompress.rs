//! The one decompression rule: how far a compressed stream of a given size may expand.
//!
//! Every compressed source obeys it (a `.tar.gz`/`.tar.zst`, an OCI layer, zisofs files
//! on a disc), so a small hostile input cannot make diskcast write or hold without end.

/// Most bytes one compressed stream may decompress to: 1 TiB, larger than any real
/// archive or layer.
pub const MAX_DECOMPRESSED: u64 = 1 << 40;

/// Most decompressed bytes per compressed byte (plus [`RATIO_SLACK`]). Deflate cannot
/// exceed about 1032:1, so this only ever stops zstd bombs; zstd passes 1000:1 only on
/// long runs of zeros.
pub const MAX_RATIO: u64 = 4096;

/// Decompressed bytes allowed beyond the ratio, so tiny streams are never refused.
pub const RATIO_SLACK: u64 = 64 << 20;

/// Bounds on decompression, so a small hostile stream cannot expand without end. One
/// rule for every compressed source: tar files, OCI layers, zisofs discs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes one stream may decompress to.
    pub max_bytes: u64,
    /// Most bytes per compressed byte, plus [`RATIO_SLACK`].
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: MAX_DECOMPRESSED, max_ratio: MAX_RATIO }
    }
}

impl Limits {
    /// The decompressed-size bound of a compressed stream (a layer, a `.tar.zst`) of
    /// `compressed` bytes.
    pub fn layer_cap(&self, compressed: u64) -> u64 {
        compressed.saturating_mul(self.max_ratio).saturating_add(RATIO_SLACK).min(self.max_bytes)
    }
}
