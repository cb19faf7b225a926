//! `diskcast extract`: a tree into a directory (safely) or into a tar.

use super::tree_source::{self, SourceArgs};
use crate::args::ProgressMode;
use clap::Args;
use diskcast_block::output::Output;
use diskcast_block::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Write a tar (PAX) instead of a directory; `-` is standard output. A pipe or
    /// character device is written in place; a file appears only when complete.
    #[arg(short = 'o', long = "output", value_name = "OUT.tar", conflicts_with = "dir")]
    pub output: Option<PathBuf>,
    /// Show a progress bar (same as --progress=bar).
    #[arg(short = 'p')]
    pub progress_bar: bool,
    /// How to report progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Threads writing files (default: one per core).
    #[arg(short = 'j', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Recreate device nodes, setuid/setgid bits and security.capability/trusted.* xattrs
    /// (as root): only for images you trust. Without it each is left out and listed.
    #[arg(long, conflicts_with = "output")]
    pub privileged: bool,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The source: directory, tar, or disk image.
    pub src: String,
    /// The directory to extract into: created, or an existing empty one.
    #[arg(required_unless_present = "output")]
    pub dir: Option<PathBuf>,
}

pub fn run(a: ExtractArgs) -> Result<u8> {
    // The tar's target is checked (not the source itself, not in use) before the source is read.
    let output =
        a.output.as_ref().map(|out| Output::open(out, &Vec::from_iter(tree_source::input_path(&a.src)))).transpose()?;
    let opened = tree_source::open(&a.src, &a.source)?;
    let progress = crate::progress::reporter(a.progress, a.progress_bar);
    if let Some(output) = output {
        let name = output.target().path().to_path_buf();
        let mut w = output.stream()?;
        let report =
            diskcast_tar::write_tar(&opened.tree, &mut w, progress.as_ref()).map_err(|e| e.with_file(&name))?;
        w.flush().map_err(|e| Error::io("cannot write", e).with_file(&name))?;
        drop(w);
        output.commit()?;
        for s in &report.skipped {
            eprintln!("diskcast: skipped {s}");
        }
        return Ok(0);
    }
    let Some(dir) = &a.dir else { return Err(Error::argument("give a directory DIR or -o OUT.tar")) };
    let opts = diskcast_host::ExtractOptions {
        threads: super::threads(a.threads)?,
        privileged: a.privileged,
        ..Default::default()
    };
    let r = diskcast_host::extract(&opened.tree, dir, &opts, progress.as_ref())?;
    for s in &r.skipped {
        eprintln!("diskcast: skipped {s}");
    }
    for s in &r.failed {
        eprintln!("diskcast: not extracted: {s}");
    }
    if r.privileged_dropped > 0 {
        eprintln!(
            "diskcast: {} privileged items not recreated (device nodes, setuid/setgid bits, security.capability and \
             trusted.* xattrs; listed above): use --privileged for an image you trust",
            r.privileged_dropped
        );
    }
    eprintln!(
        "extracted {} files ({} bytes), {} directories, {} symlinks, {} hard links, {} special files into {}{}",
        r.files,
        r.bytes,
        r.dirs,
        r.symlinks,
        r.hardlinks,
        r.specials,
        dir.display(),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!("; {} things skipped (listed above)", r.skipped.len())
        }
    );
    if r.not_extracted > 0 {
        return Err(Error::new(
            diskcast_block::ErrorKind::Io,
            format!("{} entries were not extracted (listed above); the rest is in {}", r.not_extracted, dir.display()),
        ));
    }
    Ok(0)
}
