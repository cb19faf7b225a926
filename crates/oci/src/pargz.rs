//! Gzip on every core: the input is cut into fixed-size chunks, each compressed on its
//! own thread into a complete gzip member, and the members are written in order. A
//! sequence of members is one valid gzip stream (RFC 1952 2.2); every layer reader in
//! use decodes it whole (Go's `compress/gzip`, which skopeo, umoci, containerd and
//! Docker use, reads multistream by default; ours uses `MultiGzDecoder`).
//!
//! Single-threaded deflate runs at ~40 MB/s, so a 1 GiB disk layer (a KubeVirt
//! containerDisk) took half a minute; the chunks are independent, so this scales with
//! the cores. The chunk size is fixed, so the bytes do not depend on the thread count
//! (reproducible images).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

/// Input bytes per gzip member: large enough that the restarted dictionary costs
/// little (well under 1 %), small enough to keep every core busy on small layers.
const CHUNK: usize = 4 << 20;

/// A writer that gzips what it is given on all cores into `out`.
#[derive(Debug)]
pub struct ParGzWriter<W: Write> {
    out: W,
    level: flate2::Compression,
    buf: Vec<u8>,
    pending: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    max_pending: usize,
    members: u64,
}

impl<W: Write> ParGzWriter<W> {
    /// A writer into `out` compressing at `level` on at most `threads` threads at once
    /// (`-j`), while the caller fills the next chunk.
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        ParGzWriter {
            out,
            level: flate2::Compression::new(level),
            buf: Vec::with_capacity(CHUNK),
            pending: VecDeque::new(),
            max_pending: threads.max(1),
            members: 0,
        }
    }

    /// Hands the filled chunk to a thread; writes finished members while too many are
    /// in flight.
    fn dispatch(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let level = self.level;
        // Room for this chunk's thread first, so no more than `max_pending` run at once.
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let worker = std::thread::Builder::new().name("dc-gzip".to_string()).spawn(move || {
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(chunk.len() / 2 + 64), level);
            enc.write_all(&chunk)?;
            enc.finish()
        })?;
        self.pending.push_back(worker);
        self.members += 1;
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(h) = self.pending.pop_front() {
            let member = h.join().map_err(|_| io::Error::other("a gzip worker thread panicked"))??;
            self.out.write_all(&member)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member in order and returns the writer.
    /// An empty input still gives one (empty) member: a valid gzip stream.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.members == 0 {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Members are only complete at chunk boundaries; what is buffered stays until
        // `finish`.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_decode_to_the_input_whatever_the_threads() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 12345)).map(|i| (i * 7 / 3 % 251) as u8).collect();
        let mut outs = Vec::new();
        for threads in [1, 3] {
            let mut w = ParGzWriter::new(Vec::new(), 6, threads);
            for piece in data.chunks(100_000) {
                w.write_all(piece).unwrap();
            }
            let gz = w.finish().unwrap();
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
            assert!(back == data);
            outs.push(gz);
        }
        assert!(outs[0] == outs[1], "the thread count changed the bytes");
        let empty = ParGzWriter::new(Vec::new(), 6, 2).finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&empty[..]).read_to_end(&mut back).unwrap();
        assert!(back.is_empty());
    }
}
