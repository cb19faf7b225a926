//! A layer's bytes through a pipeline of threads: one stage reads the blob and hashes it,
//! the next inflates it, and the layer's own thread hashes what came out (the diff_id)
//! and parses the tar. Each stage hands whole buffers to the next over a bounded channel
//! and the consumer reads them in place ([`Chunks`] is a `BufRead`), so no stage copies
//! what another produced; empty buffers go back to be filled again.

use crate::digest::Hasher;
use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Bytes a stage fills before handing a buffer on: large enough that a channel
/// operation per buffer costs nothing against hashing or inflating it.
const CHUNK: usize = 1 << 20;

/// Buffers one stage may have filled and not yet taken by the next: bounds a
/// pipeline's memory at about (DEPTH + 2) * CHUNK per stage.
const DEPTH: usize = 4;

/// The reading end of a stage: its filled buffers, served in place.
pub struct Chunks {
    rx: Receiver<io::Result<Vec<u8>>>,
    back: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks").field("done", &self.done).finish()
    }
}

impl BufRead for Chunks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len() && !self.done {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    self.pos = 0;
                    // The stage may be gone (it failed, or it is done): then the buffer is
                    // simply dropped.
                    let _ = self.back.try_send(old);
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The stage ended without an error after its last buffer.
                Err(_) => self.done = true,
            }
        }
        Ok(self.cur.get(self.pos..).unwrap_or(&[]))
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.cur.len());
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, buf)
    }
}

/// Runs `src` on its own thread (named `name`, counted in the caller's thread budget),
/// reading it into buffers of [`CHUNK`] bytes, and returns the end that reads them.
/// The thread stops at the end of `src`, at its first error (handed on), or when the
/// reading end is dropped.
pub fn stage(name: &str, mut src: impl Read + Send + 'static) -> io::Result<Chunks> {
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    let (back, spare) = sync_channel::<Vec<u8>>(DEPTH + 2);
    std::thread::Builder::new().name(name.to_string()).spawn(move || {
        loop {
            let mut buf = spare.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut n = 0;
            let end = loop {
                match src.read(&mut buf[n..]) {
                    Ok(0) => break Ok(true),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            if n > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            match end {
                Ok(false) => {}
                Ok(true) => return,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    })?;
    Ok(Chunks { rx, back, cur: Vec::new(), pos: 0, done: false })
}

/// What a [`Hashing`] reader hashed and counted, readable once the reader is gone.
#[derive(Debug, Clone)]
pub struct Hashed(Arc<Mutex<(Option<Hasher>, u64)>>);

impl Hashed {
    /// The bytes read, and their hash.
    pub fn finish(&self) -> (u64, Option<Hasher>) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (g.1, g.0.take())
    }
}

/// A `BufRead` that hashes (and counts) the bytes its reader consumes: the diff_id of a
/// decompressed layer, computed on the buffers the tar reader reads in place.
#[derive(Debug)]
pub struct Hashing<R> {
    inner: R,
    state: Hashed,
}

impl<R: BufRead> Hashing<R> {
    /// Hashes what is read from `inner` with `hasher` (only counts without one).
    pub fn new(inner: R, hasher: Option<Hasher>) -> (Self, Hashed) {
        let state = Hashed(Arc::new(Mutex::new((hasher, 0))));
        (Hashing { inner, state: state.clone() }, state)
    }
}

impl<R: BufRead> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        // What fill_buf returned is still buffered: hash the part consumed.
        if let Ok(have) = self.inner.fill_buf() {
            let n = n.min(have.len());
            let mut g = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = &mut g.0 {
                h.update(&have[..n]);
            }
            g.1 = g.1.saturating_add(diskcast_layout::u64_from_usize(n));
        }
        self.inner.consume(n);
    }
}

impl<R: BufRead> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, buf)
    }
}

/// `Read::read` for a reader whose buffer is its `BufRead` (no second copy to keep).
fn read_buffered(r: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let have = r.fill_buf()?;
    let n = have.len().min(buf.len());
    buf[..n].copy_from_slice(&have[..n]);
    r.consume(n);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{Algorithm, Digest};

    #[test]
    fn stages_hand_on_every_byte_in_order_and_hash_it() {
        let data: Vec<u8> = (0..(CHUNK * 3 + 777)).map(|i| (i % 251) as u8).collect();
        let first = stage("t-one", std::io::Cursor::new(data.clone())).unwrap();
        let second = stage("t-two", first).unwrap();
        let (mut hashing, hashed) = Hashing::new(second, Some(Hasher::new(Algorithm::Sha256)));
        let mut back = vec![0u8; 1000];
        hashing.read_exact(&mut back).unwrap();
        hashing.read_to_end(&mut back).unwrap();
        assert!(back == data);
        let (n, h) = hashed.finish();
        assert_eq!(n, diskcast_layout::u64_from_usize(data.len()));
        assert_eq!(h.unwrap().finish(), Digest::sha256(&data));
    }

    #[test]
    fn an_error_of_a_stage_reaches_the_reader() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("broken blob"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut c = stage("t-fail", Failing(CHUNK + 5)).unwrap();
        let mut back = Vec::new();
        let e = c.read_to_end(&mut back).unwrap_err();
        assert_eq!(e.to_string(), "broken blob");
        assert_eq!(back.len(), CHUNK + 5);
    }
}
