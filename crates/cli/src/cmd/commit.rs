//! `diskcast commit`: an overlay's data written into its backing file (or into an image
//! further down its chain), then the overlay emptied, with qemu-img commit's flags,
//! messages and exit codes. The data goes through the copy engine into the base format's
//! in-place writer ([`Driver::write_into`](diskcast_block::registry::Driver::write_into)),
//! as a [`Delta`] that leaves every range no image above the base allocates alone.

use crate::common::args::{BackingArgs, CacheMode, JobsArgs};
use crate::common::{chain_image, images_for_edit, parse_rate, same_file, write_delta};
use clap::Args;
use diskcast_block::delta::{Delta, Scope, scope_ranges};
use diskcast_block::io::ImageFile;
use diskcast_block::lock::{ImageLock, LockMode};
use diskcast_block::registry::{CreateOptions, Preallocation};
use diskcast_block::{Error, Result, ResultExt};
use std::path::PathBuf;

pub fn run(a: CommitArgs) -> Result<u8> {
    let rate = a.rate.as_deref().map(parse_rate).transpose()?.filter(|&r| r > 0);
    let threads = a.jobs.count()?;
    // Every image is locked below, each its own way, before the chain is opened for reading.
    let images = images_for_edit(&a.backing_args)?;
    if let Some(f) = &a.format {
        images.registry.get(f)?;
    }
    let chain = images.chain_files(&a.file, a.format.as_deref())?;
    if chain.len() < 2 {
        return Err(Error::argument("Image does not have a backing file").with_file(&a.file));
    }
    let depth = match &a.base {
        None => 1,
        Some(base) => (1..chain.len()).find(|&i| same_file(&chain[i].path, base)).ok_or_else(|| {
            Error::argument(format!("Did not find '{}' in the backing chain of '{}'", base.display(), a.file.display()))
        })?,
    };
    let base = &chain[depth];
    let base_driver = images.registry.get(&base.format)?;
    if !base_driver.writes_in_place() && !base_driver.edits_in_place() {
        return Err(Error::unsupported(format!(
            "cannot commit into the base: {} (qemu-img can)",
            images.registry.not_in_place(base_driver)
        ))
        .with_file(&base.path));
    }
    // -b implies -d, as in qemu-img: the images between stay as they are, so the top
    // must keep its data for the chain to read as before.
    let empty = !a.drop && a.base.is_none();
    let _locks = chain
        .iter()
        .take(depth + 1)
        .enumerate()
        .map(|(i, c)| {
            let writes = i == depth || (i == 0 && empty);
            ImageLock::acquire(&c.path, if writes { LockMode::Write } else { LockMode::Read })
        })
        .collect::<Result<Vec<_>>>()?;
    let top_driver = images.registry.get(&chain[0].format)?;
    let top_file = match empty {
        true => {
            let file = ImageFile::open_rw(&a.file)?;
            if let Some(why) = top_driver.empty_refusal(&file)? {
                return Err(Error::unsupported(format!(
                    "diskcast cannot empty this image after the commit ({why}); pass -d to commit and keep it as \
                     it is"
                ))
                .with_file(&a.file));
            }
            Some(file)
        }
        false => None,
    };
    let top = images.open(&a.file, a.format.as_deref())?;
    let size = top.size();
    let below = chain_image(top.as_ref(), depth).map(|b| b.size()).unwrap_or_default();
    let base_file = ImageFile::open_rw(&base.path)?;
    // A base smaller than the overlay grows to its size first, as qemu-img commit does.
    if below < size {
        base_driver.resize(&base_file, size, Preallocation::Off)?;
    }
    let writer = base_driver.write_into(base_file, size, &CreateOptions::default()).file(&base.path)?;
    let delta = Delta::new(size, Some(top.as_ref()), scope_ranges(top.as_ref(), Scope::AllocatedAbove(depth))?);
    write_delta(&delta, writer, threads, rate, a.progress && !a.quiet, &base.path)?;
    if a.cache != Some(CacheMode::Unsafe) {
        ImageFile::open_rw(&base.path)?.sync()?;
    }
    drop(top);
    if let Some(file) = top_file {
        top_driver.make_empty(&file)?;
    }
    if !a.quiet {
        println!("Image committed.");
    }
    Ok(0)
}

/// `diskcast commit` arguments, as qemu-img commit takes them.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Cache mode of the images written, as in qemu-img: unsafe skips the final sync of the
    /// base; the others sync it.
    #[arg(short = 't', long = "cache", value_name = "CACHE", value_enum)]
    pub cache: Option<CacheMode>,
    /// Commit into BASE, an image further down FILE's backing chain, through every image
    /// between (implies -d: FILE and the images between keep their data).
    #[arg(short = 'b', long = "base", value_name = "BASE")]
    pub base: Option<PathBuf>,
    /// Keep FILE's data after the commit (by default FILE is emptied and reads from its
    /// backing file again, as qemu-img leaves it).
    #[arg(short = 'd', long = "drop")]
    pub drop: bool,
    /// Show a progress bar.
    #[arg(short = 'p', long = "progress")]
    pub progress: bool,
    /// Print nothing on success (qemu-img prints "Image committed.").
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Copy at most RATE bytes per second (suffixes K, M, G; 0: no limit).
    #[arg(short = 'r', long = "rate", value_name = "RATE")]
    pub rate: Option<String>,
    #[command(flatten)]
    pub jobs: JobsArgs,
    #[command(flatten)]
    pub backing_args: BackingArgs,
    /// The overlay whose data is committed.
    pub file: PathBuf,
}
