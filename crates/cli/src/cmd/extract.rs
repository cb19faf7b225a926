//! `diskcast extract`: a tree into a directory (safely) or into a tar.

use crate::common::args::{JobsArgs, ProgressArgs, SourceArgs};
use crate::common::output::{ArchiveWriter, interrupt_flag};
use crate::common::tree_source;
use clap::Args;
use diskcast_block::size::count;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// Write a tar (PAX) instead of a directory; `-` is standard output. A pipe or
    /// character device is written in place; a file appears only when complete.
    #[arg(short = 'o', long = "out", alias = "output", value_name = "OUT.tar", conflicts_with = "dir",
          value_parser = crate::common::args::out_path)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// Recreate device nodes, setuid/setgid bits and security.capability/trusted.* xattrs
    /// (as root): only for images you trust. Without it each is left out and listed.
    #[arg(long, conflicts_with = "output")]
    pub privileged: bool,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The source: directory, tar, or disk image (DISK, DISK:PART by partition number, name
    /// or type, DISK:VG/LV for an LVM logical volume).
    pub src: String,
    /// The directory to extract into: created, or an existing empty one. Ctrl-C removes
    /// what was extracted (and DIR, when this command created it).
    #[arg(required_unless_present = "output")]
    pub dir: Option<PathBuf>,
}

pub fn run(a: ExtractArgs) -> Result<u8> {
    // The tar's target is checked (not the source itself, not in use) before the source is read.
    let inputs = Vec::from_iter(tree_source::input_path(&a.src));
    let archive = a.output.as_ref().map(|out| ArchiveWriter::open(out, &inputs)).transpose()?;
    let threads = a.jobs.count()?;
    // A container image extracted into a directory: its files are staged in DIR while
    // the layers are read and checked, then renamed into place (each layer decoded
    // once); a failed read leaves nothing behind.
    let mut target = match &a.dir {
        Some(dir) if archive.is_none() && diskcast_oci::is_image_ref(&a.src) => Some(diskcast_host::Target::open(dir)?),
        _ => None,
    };
    let opened = match &mut target {
        Some(t) => tree_source::open_staged(&a.src, &a.source, threads, Some(t.staging()?))?,
        None => tree_source::open(&a.src, &a.source, threads)?,
    };
    let progress = a.progress.reporter();
    if let Some(archive) = archive {
        let report = archive.write(|w| diskcast_tar::write_tar(&opened.tree, w, progress.as_ref()))?;
        for s in &report.skipped {
            eprintln!("diskcast: skipped {s}");
        }
        return Ok(0);
    }
    let Some(dir) = &a.dir else { return Err(Error::argument("give a directory DIR or -o OUT.tar")) };
    // Ctrl-C stops the extraction, which removes what it made (DIR too when it made it).
    let opts = diskcast_host::ExtractOptions {
        privileged: a.privileged,
        cancel: Some(interrupt_flag()?),
        ..diskcast_host::ExtractOptions::new(threads)
    };
    let r = match target {
        Some(t) => t.extract(&opened.tree, &opts, progress.as_ref())?,
        None => diskcast_host::extract(&opened.tree, dir, &opts, progress.as_ref())?,
    };
    // The process ends next: freeing a large tree node by node only delays that (15 ms
    // for 73 000 entries). Nothing in a tree cleans up when dropped; its descriptors
    // close at exit.
    std::mem::forget(opened);
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
        "extracted {} ({}), {}, {}, {}, {} into {}{}",
        count(r.files, "file", "files"),
        count(r.bytes, "byte", "bytes"),
        count(r.dirs, "directory", "directories"),
        count(r.symlinks, "symlink", "symlinks"),
        count(r.hardlinks, "hard link", "hard links"),
        count(r.specials, "special file", "special files"),
        dir.display(),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!("; {} skipped (listed above)", count(r.skipped.len(), "thing", "things"))
        }
    );
    if r.not_extracted > 0 {
        let were = if r.not_extracted == 1 { "was" } else { "were" };
        return Err(Error::new(
            diskcast_block::ErrorKind::Io,
            format!(
                "{} {were} not extracted (listed above); the rest is in {}",
                count(r.not_extracted, "entry", "entries"),
                dir.display()
            ),
        ));
    }
    Ok(0)
}
