//! What every tree command (`ls`, `cat`, `extract`) takes to name its source, and how
//! it opens one.

use clap::Args;
use diskcast_block::Result;
use diskcast_sources::{Opened, SourceOptions, open_tree};

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
    pub container: super::oci::ContainerArgs,
}

/// Opens `src`, printing the source's warnings (skipped tar members) on stderr.
pub fn open(src: &str, a: &SourceArgs) -> Result<Opened> {
    let opts = SourceOptions { tree: a.tree.clone(), format: a.format.clone(), image: a.container.open_options()? };
    let opened = open_tree(src, &opts)?;
    for w in &opened.warnings {
        eprintln!("diskcast: warning: {src}: {w}");
    }
    Ok(opened)
}
