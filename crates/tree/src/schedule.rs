//! Reading files held in front-to-back streams (a tar, a decompressed layer) without
//! reading a stream more than once: one order for every sink ([`Schedule`]) and one
//! cursor type ([`StreamCursor`], pooled by [`CursorPool`]).

use crate::content::{Content, FileData, StreamSource, skip, stream_error};
use diskcast_block::Result;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// The identity of a stream: its `Arc`'s address. Files of one source share one `Arc`.
pub fn stream_id(stream: &Arc<dyn StreamSource>) -> usize {
    Arc::as_ptr(stream).cast::<()>().addr()
}

/// A stream and its files with their offsets, as pushed.
type Run<T> = (Arc<dyn StreamSource>, Vec<(u64, T)>);

/// The files of one stream, in offset order.
#[derive(Debug)]
pub struct StreamRun<T> {
    /// The stream holding them.
    pub stream: Arc<dyn StreamSource>,
    /// The sink's items, by the offset of their content in the stream (ties by item).
    pub files: Vec<T>,
}

/// The order in which a sink reads its files: files whose content is not in a stream
/// first, in the order the sink gave them; then the files of each stream, streams in
/// the order first seen, files in offset order, so each stream is read once front to
/// back. Every sink that reads many files (ext4, FAT and exFAT writers, extraction, tree
/// walks) takes its order from here; `T` is the sink's own handle for a file.
#[derive(Debug)]
pub struct Schedule<T> {
    loose: Vec<T>,
    runs: Vec<Run<T>>,
    index: HashMap<usize, usize>,
}

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Schedule { loose: Vec::new(), runs: Vec::new(), index: HashMap::new() }
    }
}

impl<T: Ord> Schedule<T> {
    /// An empty schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the file `item` whose content is `file`.
    pub fn push(&mut self, file: &FileData, item: T) {
        match &file.content {
            Content::Stream { stream, offset } => {
                let next = self.runs.len();
                let i = *self.index.entry(stream_id(stream)).or_insert(next);
                if i == next {
                    self.runs.push((stream.clone(), Vec::new()));
                }
                if let Some(run) = self.runs.get_mut(i) {
                    run.1.push((*offset, item));
                }
            }
            _ => self.loose.push(item),
        }
    }

    /// The files not in a stream (in the order given), and one run per stream.
    pub fn into_runs(self) -> (Vec<T>, Vec<StreamRun<T>>) {
        let runs = self
            .runs
            .into_iter()
            .map(|(stream, mut files)| {
                files.sort_unstable();
                StreamRun { stream, files: files.into_iter().map(|(_, item)| item).collect() }
            })
            .collect();
        (self.loose, runs)
    }

    /// Every item in the schedule's order.
    pub fn into_order(self) -> Vec<T> {
        let (mut out, runs) = self.into_runs();
        out.extend(runs.into_iter().flat_map(|r| r.files));
        out
    }
}

/// One open reader of a [`StreamSource`] at a known position: reads at increasing
/// offsets cost one pass over the stream. Reading backwards, or another stream, reopens.
#[derive(Default)]
pub struct StreamCursor {
    open: Option<(Arc<dyn StreamSource>, Box<dyn Read + Send>)>,
    pos: u64,
}

impl std::fmt::Debug for StreamCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.open.as_ref().map(|(s, _)| s.name());
        f.debug_struct("StreamCursor").field("stream", &name).field("pos", &self.pos).finish()
    }
}

impl StreamCursor {
    /// A cursor with nothing open yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when this cursor is open on `stream` at or before `offset`.
    fn can_reach(&self, stream: &Arc<dyn StreamSource>, offset: u64) -> bool {
        self.open.as_ref().is_some_and(|(s, _)| stream_id(s) == stream_id(stream)) && self.pos <= offset
    }

    /// Fills `buf` with `stream`'s bytes at `offset`; an early end is a `Corrupt` error
    /// naming the stream.
    pub fn read_exact_at(&mut self, stream: &Arc<dyn StreamSource>, buf: &mut [u8], offset: u64) -> Result<()> {
        if !self.can_reach(stream, offset) {
            self.open = None;
            self.open = Some((stream.clone(), stream.open()?));
            self.pos = 0;
        }
        let Some((_, r)) = self.open.as_mut() else { return Ok(()) };
        let done = skip(r.as_mut(), offset - self.pos, stream.as_ref())
            .and_then(|()| r.read_exact(buf).map_err(|e| stream_error(stream.as_ref(), e)));
        match done {
            Ok(()) => {
                self.pos = offset.saturating_add(crate::u64_len(buf));
                Ok(())
            }
            Err(e) => {
                self.open = None;
                Err(e)
            }
        }
    }

    /// Fills `buf` with `file`'s bytes at `offset`: through this cursor when the file is
    /// in a stream, else with [`FileData::read_at`].
    pub fn read_file(&mut self, file: &FileData, buf: &mut [u8], offset: u64) -> Result<()> {
        match &file.content {
            Content::Stream { stream, offset: start } => {
                diskcast_block::range_end(offset, crate::u64_len(buf), file.size)?;
                self.read_exact_at(stream, buf, start.saturating_add(offset))
            }
            _ => file.read_at(buf, offset),
        }
    }
}

/// Most cursors a pool keeps open: a few per copy worker, so files laid out in stream
/// order are read with one pass over each stream, and memory (one decompressor window
/// each) stays bounded whatever the number of streams.
const MAX_CURSORS: usize = 32;

/// [`StreamCursor`]s shared by threads reading many streams at once (a planned image
/// read by the copy engine's workers, a tar written in name order from layers). A read
/// at stream offset `p` takes the cursor furthest along that is not past `p` (or opens a
/// new one), and puts it back at its new position; past [`MAX_CURSORS`] the one furthest
/// behind is closed.
#[derive(Default)]
pub struct CursorPool {
    pool: Mutex<Vec<StreamCursor>>,
}

impl std::fmt::Debug for CursorPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.pool.lock().map_or(0, |p| p.len());
        f.debug_struct("CursorPool").field("open", &n).finish()
    }
}

impl CursorPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills `buf` with `file`'s bytes at `offset`, reading a stream through the pool.
    pub fn read_file(&self, file: &FileData, buf: &mut [u8], offset: u64) -> Result<()> {
        let Content::Stream { stream, offset: start } = &file.content else { return file.read_at(buf, offset) };
        let at = start.saturating_add(offset);
        let mut cur = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, c)| c.can_reach(stream, at))
                .max_by_key(|(_, c)| c.pos)
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i)).unwrap_or_default()
        };
        cur.read_file(file, buf, offset)?;
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() >= MAX_CURSORS
            && let Some(i) = pool.iter().enumerate().min_by_key(|(_, c)| c.pos).map(|(i, _)| i)
        {
            pool.swap_remove(i);
        }
        pool.push(cur);
        Ok(())
    }
}
