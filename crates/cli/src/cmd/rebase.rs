//! `diskcast rebase`: an overlay's backing file changed, with qemu-img rebase's flags,
//! messages and exit codes. `-u` rewrites only the name and format in the header. The
//! safe mode first keeps the guest's view: every cluster the overlay does not allocate and
//! where the old and new backing chains read differently gets the old data written into
//! the overlay (through the copy engine and the format's in-place writer, as a [`Delta`]
//! comparing the two; with `-c` written as compressed clusters), and only then the header
//! names the new backing file.

use crate::common::args::{BackingArgs, CacheMode, JobsArgs};
use crate::common::{images_for_edit, same_file, write_delta};
use clap::Args;
use diskcast_block::delta::{Delta, Scope, scope_ranges};
use diskcast_block::io::ImageFile;
use diskcast_block::lock::{ImageLock, LockMode};
use diskcast_block::registry::CreateOptions;
use diskcast_block::{Error, Result, ResultExt};
use std::path::PathBuf;

pub fn run(a: RebaseArgs) -> Result<u8> {
    let threads = a.jobs.count()?;
    // qemu-img: without -b, the unsafe mode drops the backing file; the safe mode refuses.
    let new = a.backing.as_deref().filter(|b| !b.is_empty());
    if a.backing.is_none() && !a.unsafe_mode {
        return Err(Error::argument("Must specify backing file (-b) or use unsafe mode (-u)"));
    }
    let backing = match (new, &a.backing_format) {
        (Some(name), Some(fmt)) => Some((name, fmt.as_str())),
        (Some(name), None) => {
            return Err(Error::argument(format!(
                "Could not change the backing file to '{name}': backing format must be specified (-F FMT)"
            )));
        }
        (None, _) => None,
    };
    let images = images_for_edit(&a.backing_args)?;
    for f in [&a.format, &a.backing_format].into_iter().flatten() {
        images.registry.get(f)?;
    }
    let driver = match &a.format {
        Some(f) => images.registry.get(f)?,
        None => images.registry.probe(&a.file)?,
    };
    // -c: qemu-img refuses it, in either mode, for a format it cannot compress in place.
    if a.compress && !driver.edits_in_place() {
        return Err(Error::argument("Compression not supported for this file format").with_file(&a.file));
    }
    if !driver.sets_backing() {
        let file = ImageFile::open(&a.file)?;
        return driver.set_backing(&file, backing).map(|()| 0);
    }
    // Locked as qemu-img rebase locks it: a VM or qemu-io using the image is refused; in
    // the safe mode the old chain and the new backing file are locked for reading (a VM
    // writing one of them is refused too), before any of them is read.
    let mut locks = vec![ImageLock::acquire(&a.file, LockMode::Write)?];
    let file = ImageFile::open_rw(&a.file)?;
    if !a.unsafe_mode {
        let chain = images.chain_files(&a.file, Some(driver.name()))?;
        for below in chain.iter().skip(1) {
            locks.push(ImageLock::acquire(&below.path, LockMode::Read)?);
        }
        let new_path = match backing {
            Some((name, _)) => {
                let canonical =
                    a.file.canonicalize().map_err(|e| Error::io("cannot resolve path", e).with_file(&a.file))?;
                let path = images.gate.resolve(&a.file, name, "backing_file", &[canonical]).map_err(|e| {
                    Error::argument(format!("Could not open new backing file '{name}': {e}")).with_file(&a.file)
                })?;
                locks.push(ImageLock::acquire(&path, LockMode::Read)?);
                Some(path)
            }
            None => None,
        };
        let top = images.open(&a.file, Some(driver.name()))?;
        let new_image = match (backing, &new_path) {
            (Some((name, fmt)), Some(path)) => {
                let opened = images.registry.open(path, Some(fmt), &images.context());
                Some(opened.map_err(|e| Error::argument(format!("Could not open new backing file '{name}': {e}")))?)
            }
            _ => None,
        };
        let size = top.size();
        // A new backing file already on the chain, read as the chain reads it: only what
        // the images above it hold (or lack) can differ, as qemu-img compares it.
        let on_chain = new_path.as_deref().and_then(|p| {
            chain
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, c)| same_file(&c.path, p) && Some(c.format.as_str()) == backing.map(|b| b.1))
        });
        let scope = on_chain.map_or(Scope::NotAllocated, |(depth, _)| Scope::NotAllocatedAbove(depth));
        let ranges = scope_ranges(top.as_ref(), scope)?;
        let opts = CreateOptions { compress: a.compress, ..CreateOptions::default() };
        let writer = driver.write_into(ImageFile::open_rw(&a.file)?, size, &opts).file(&a.file)?;
        let unit = writer.granularity();
        let delta = Delta::new(size, top.backing(), ranges).comparing(new_image.as_deref(), unit);
        write_delta(&delta, writer, threads, None, a.progress && !a.quiet, &a.file)?;
    }
    // The header is written in one write and synced, whatever -t says.
    driver.set_backing(&file, backing)?;
    Ok(0)
}

/// `diskcast rebase` arguments, as qemu-img rebase takes them.
#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// The new backing file, as it is to be written in FILE (relative names resolve
    /// against FILE's directory); "" makes FILE standalone.
    #[arg(short = 'b', long = "backing", value_name = "BACKING")]
    pub backing: Option<String>,
    /// Format of the new backing file (needed with a non-empty -b, as qemu-img needs it).
    #[arg(short = 'F', long = "backing-format", value_name = "FMT")]
    pub backing_format: Option<String>,
    /// Unsafe: only write the new name and format into the header, opening no backing
    /// file (for a backing file that was moved or renamed); without -b, drop the backing file.
    #[arg(short = 'u', long = "backing-unsafe")]
    pub unsafe_mode: bool,
    /// Write the clusters the safe mode copies into FILE compressed (qcow2), as qemu-img
    /// rebase -c; ignored with -u, which copies nothing.
    #[arg(short = 'c', long = "compress")]
    pub compress: bool,
    /// Show a progress bar.
    #[arg(short = 'p', long = "progress")]
    pub progress: bool,
    /// Print nothing but errors.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Cache mode of FILE, as in qemu-img: accepted; the new header is always synced.
    #[arg(short = 't', long = "cache", value_name = "CACHE", value_enum)]
    pub cache: Option<CacheMode>,
    /// Cache mode of the backing files, as in qemu-img: accepted, reads are the same.
    #[arg(short = 'T', long = "backing-cache", value_name = "CACHE", value_enum)]
    pub backing_cache: Option<CacheMode>,
    #[command(flatten)]
    pub jobs: JobsArgs,
    #[command(flatten)]
    pub backing_args: BackingArgs,
    /// The overlay to rebase, changed in place.
    pub file: PathBuf,
}
