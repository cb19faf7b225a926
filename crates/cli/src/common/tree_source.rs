//! What every tree command (`ls`, `cat`, `extract`, and the builders that read a tree)
//! takes to name its source, and how it opens one.

use super::args::SourceArgs;
use diskcast_block::Result;
use diskcast_host::{StagedFile, Staging};
use diskcast_oci::flatten::{ContentSink, FileSink};
use diskcast_sources::{Opened, open_tree_into};
use diskcast_tar::Member;
use diskcast_tree::StreamSource;
use std::path::PathBuf;
use std::sync::Arc;

/// Opens `src` (a container image's layers decoded by `threads`), printing the
/// source's warnings (skipped tar members) on stderr.
pub fn open(src: &str, a: &SourceArgs, threads: usize) -> Result<Opened> {
    open_staged(src, a, threads, None)
}

/// [`open`], staging a container image's file contents in an extraction target's
/// `staging` as its layers are read, so extraction renames them into place instead of
/// decoding every layer again.
pub fn open_staged(src: &str, a: &SourceArgs, threads: usize, staging: Option<&Staging>) -> Result<Opened> {
    let sink = staging.map(Stager);
    let opened = open_tree_into(src, &a.options(threads)?, sink.as_ref().map(|s| s as &dyn ContentSink))?;
    for w in &opened.warnings {
        eprintln!("diskcast: warning: {src}: {w}");
    }
    Ok(opened)
}

/// The file or directory `src` reads on this machine, which no output may replace.
pub fn input_path(src: &str) -> Option<PathBuf> {
    diskcast_sources::source_path(src)
}

/// Layer files into an extraction target's staging directory. A file that cannot be
/// staged (no space, a filesystem that refuses it) is left to extraction, which reads
/// it from its layer and reports what fails then.
struct Stager<'a>(&'a Staging);

impl ContentSink for Stager<'_> {
    fn file(&self, stream: &Arc<dyn StreamSource>, m: &Member) -> Option<Box<dyn FileSink + '_>> {
        let file = self.0.file(stream, m.data_offset, m.size, &m.meta).ok()?;
        Some(Box::new(Staged(file)))
    }
}

struct Staged<'a>(StagedFile<'a>);

impl FileSink for Staged<'_> {
    fn write(&mut self, piece: &[u8]) -> bool {
        self.0.write(piece).is_ok()
    }

    fn finish(self: Box<Self>) {
        // Not kept: extraction writes it from its layer.
        let _ = self.0.finish();
    }
}
