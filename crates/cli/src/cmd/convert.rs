//! `diskcast convert`: any readable image to any writable format, in parallel.
//!
//! Two stages, so a mistake on the command line costs nothing: [`Plan::new`] parses and
//! checks every argument, format and `-o` option without opening a file; only a valid
//! plan is [`run`](Plan::run), which opens the source (the only moment a `--replay-log`
//! may write into it) and then writes the target.

use super::{Images, create_options, lock_target, threads};
use crate::args::ConvertArgs;
use crate::progress::reporter;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_block::size::parse_size;
use diskcast_block::{BlockWrite, Error, Result, ResultExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Pipe buffer: large writes keep the reader on the other end busy.
const STDOUT_BUFFER: usize = 4 << 20;

pub fn run(a: ConvertArgs) -> Result<u8> {
    // A container image DST (its transport prefix says so) makes this a tree conversion.
    let dst = a.dst.to_string_lossy();
    if diskcast_oci::is_image_ref(&dst) {
        if a.output_format != "raw" || !a.options.is_empty() || a.compress {
            return Err(Error::argument("-O, -o and -c apply to disk images, not to a container image DST"));
        }
        let progress = reporter(a.progress, a.progress_bar);
        return super::oci::convert(&a.src.to_string_lossy(), &dst, a.format.clone(), &a.image, progress.as_ref());
    }
    let images = Images::new(&a.open)?;
    let plan = Plan::new(&a, &images)?;
    plan.run(&images, &a)?;
    Ok(0)
}

/// Where the new image goes.
#[derive(Debug)]
enum Target {
    /// Standard output (`-`): the driver writes strictly front to back.
    Stdout,
    /// A file, written as a temporary beside it and renamed into place.
    File(PathBuf),
}

/// A convert job whose every argument has been checked; nothing is opened yet.
#[derive(Debug)]
struct Plan<'r> {
    driver: &'r dyn Driver,
    create: CreateOptions,
    target: Target,
    copy: CopyOptions,
}

impl<'r> Plan<'r> {
    /// Checks the whole command line: formats, `-o` keys and values, flags, the target's
    /// directory, and that the target is not the source. Touches no image.
    fn new(a: &ConvertArgs, images: &'r Images) -> Result<Self> {
        if let Some(f) = &a.format {
            images.registry.get(f)?;
        }
        let driver = images.registry.get(&a.output_format)?;
        let create = create_options(&a.options, a.compress)?;
        let min_sparse = match parse_size(&a.min_sparse)? {
            0 => None,
            n => Some(n),
        };
        let copy = CopyOptions { threads: threads(a.threads)?, min_sparse, ..CopyOptions::default() };
        driver.validate(&create)?;
        let target = if a.dst.as_os_str() == "-" {
            driver.check_stream(&create).map_err(|e| {
                Error::argument(format!("{e}; formats that can: {}", images.registry.stream_formats().join(", ")))
            })?;
            Target::Stdout
        } else {
            check_target_path(&a.dst)?;
            refuse_same_file(&a.src, &a.dst)?;
            Target::File(a.dst.clone())
        };
        Ok(Plan { driver, create, target, copy })
    }

    /// Opens the source, writes the target, and renames it into place.
    fn run(self, images: &Images, a: &ConvertArgs) -> Result<()> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
            .map_err(|e| Error::argument(format!("cannot install the Ctrl-C handler: {e}")))?;
        let opts = CopyOptions { cancel: Some(cancel), ..self.copy };
        let progress = reporter(a.progress, a.progress_bar);
        // The target first: an image a VM uses is refused before the source is opened
        // (and before any log is replayed into it). Held until the new file replaced it.
        let _target_lock = match &self.target {
            Target::File(path) => lock_target(path)?,
            Target::Stdout => None,
        };
        let src = images.open(&a.src, a.format.as_deref())?;
        match &self.target {
            Target::Stdout => {
                let out = Box::new(std::io::BufWriter::with_capacity(STDOUT_BUFFER, std::io::stdout()));
                let dst = self.driver.create_stream(out, src.size(), &self.create)?;
                copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref())?;
                dst.finish()
            }
            Target::File(path) => {
                let out = OutputFiles::new();
                let dst: Box<dyn BlockWrite> = self.driver.create(path, src.size(), &self.create, &out).file(path)?;
                copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref()).file(path)?;
                dst.finish().file(path)?;
                out.commit()
            }
        }
    }
}

/// The target must be a file name in an existing directory.
fn check_target_path(dst: &Path) -> Result<()> {
    if dst.is_dir() {
        return Err(Error::argument("the target is a directory; name the image file to write").with_file(dst));
    }
    let dir = dst.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::argument(format!("the target's directory {} does not exist", dir.display())).with_file(dst));
    }
    Ok(())
}

/// Refuses a target that is the source itself (same device and inode, through any name
/// or hard link): renaming over it would destroy the input.
fn refuse_same_file(src_path: &Path, dst: &Path) -> Result<()> {
    let Ok(target) = std::fs::metadata(dst) else { return Ok(()) };
    let Ok(source) = std::fs::metadata(src_path) else { return Ok(()) }; // opening it will say why
    if (source.dev(), source.ino()) == (target.dev(), target.ino()) {
        return Err(Error::argument(format!(
            "the target {} is the source image itself; write to another file",
            dst.display()
        )));
    }
    Ok(())
}
