//! What every tree command (`ls`, `cat`, `extract`, and the builders that read a tree)
//! takes to name its source, and how it opens one.

use crate::args::ShareArgs;
use clap::Args;
use diskcast_block::Result;
use diskcast_block::lock::Locks;
use diskcast_sources::{Opened, SourceOptions, open_tree};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Options of a tree source.
#[derive(Debug, Default, Args)]
pub struct SourceArgs {
    /// Which tree of a disc with several: udf, rockridge, joliet, iso9660 (default: the
    /// richest one present).
    #[arg(long = "tree", value_name = "NAME")]
    pub tree: Option<String>,
    /// Block format of a disk image SRC (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    #[command(flatten)]
    pub share: ShareArgs,
    #[command(flatten)]
    pub container: super::oci::ContainerArgs,
}

impl SourceArgs {
    /// The library's options; disk images are locked as qemu-img locks its inputs (the
    /// shared read lock, or with `-U` one that lets writers be), until the command ends.
    pub fn options(&self) -> Result<SourceOptions> {
        let locks = Arc::new(Locks::new(self.share.lock_mode()));
        // The tree reads its images until the command ends, so their locks stay as long.
        static HELD: Mutex<Vec<Arc<Locks>>> = Mutex::new(Vec::new());
        HELD.lock().unwrap_or_else(|p| p.into_inner()).push(locks.clone());
        Ok(SourceOptions {
            tree: self.tree.clone(),
            format: self.format.clone(),
            image: self.container.open_options()?,
            locks: Some(locks),
        })
    }
}

/// Opens `src`, printing the source's warnings (skipped tar members) on stderr.
pub fn open(src: &str, a: &SourceArgs) -> Result<Opened> {
    let opened = open_tree(src, &a.options()?)?;
    for w in &opened.warnings {
        eprintln!("diskcast: warning: {src}: {w}");
    }
    Ok(opened)
}

/// The file or directory `src` reads on this machine, which no output may replace.
pub fn input_path(src: &str) -> Option<PathBuf> {
    diskcast_sources::source_path(src)
}
