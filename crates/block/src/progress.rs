//! Progress reporting from library code; only the binary decides how to draw it.

/// Receives progress of a long operation. Called from many threads.
pub trait Progress: Send + Sync {
    /// The operation will cover `total` bytes.
    fn start(&self, total: u64);
    /// `bytes` more are done (copied, or skipped because they read as zeros).
    fn advance(&self, bytes: u64);
    /// The operation ended (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
}
