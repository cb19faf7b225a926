//! What every tree command (`ls`, `cat`, `extract`, and the builders that read a tree)
//! takes to name its source, and how it opens one.

use super::args::SourceArgs;
use diskcast_block::Result;
use diskcast_sources::{Opened, open_tree};
use std::path::PathBuf;

/// Opens `src` (a container image's layers decoded by `threads`), printing the
/// source's warnings (skipped tar members) on stderr.
pub fn open(src: &str, a: &SourceArgs, threads: usize) -> Result<Opened> {
    let opened = open_tree(src, &a.options(threads)?)?;
    for w in &opened.warnings {
        eprintln!("diskcast: warning: {src}: {w}");
    }
    Ok(opened)
}

/// The file or directory `src` reads on this machine, which no output may replace.
pub fn input_path(src: &str) -> Option<PathBuf> {
    diskcast_sources::source_path(src)
}
