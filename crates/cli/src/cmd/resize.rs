//! `diskcast resize`: an image's virtual size changed in place, with qemu-img resize's
//! flags, checks, messages and exit codes. Each format's driver does the resizing; those
//! qemu-img cannot resize (VMDK, VHD, VHDX, VDI) refuse as it does.

use crate::common::args::{OpenArgs, ShareArgs};
use crate::common::{Images, image_name};
use clap::Args;
use diskcast_block::io::ImageFile;
use diskcast_block::lock::{LockMode, apply};
use diskcast_block::registry::Preallocation;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

pub fn run(a: ResizeArgs) -> Result<u8> {
    let prealloc = Preallocation::parse(&a.preallocation)?;
    let (path, format) = image_name(&a.file, a.format.as_deref(), a.image_opts)?;
    let change = SizeChange::parse(&a.size)?;
    // Locked as qemu-img resize locks it: a VM or qemu-io using the image is refused.
    let file = ImageFile::open_rw(&path)?;
    apply(file.file(), &path, LockMode::Write)?;
    // Its size is read through a second handle, which our own write lock must not stop.
    let images = Images::new(&OpenArgs { share: ShareArgs { force_share: true }, ..OpenArgs::default() })?;
    let driver = match &format {
        Some(f) => images.registry.get(f)?,
        None => images.registry.probe(&path)?,
    };
    let current = images.registry.open(&path, Some(driver.name()), &images.context_without_backing())?.size();
    let size = change.apply(current)?;
    if size == 0 {
        return Err(Error::argument("New image size must be positive"));
    }
    if size < current {
        if !a.shrink {
            return Err(Error::argument(
                "Use the --shrink option to perform a shrink operation (shrinking deletes all data past the \
                 new end; make sure there is no important data there)",
            ));
        }
        if prealloc != Preallocation::Off {
            return Err(Error::argument("Preallocation can only be used for growing images"));
        }
    }
    driver.resize(&file, size, prealloc)?;
    if !a.quiet {
        println!("Image resized.");
    }
    Ok(0)
}

/// `[+-]SIZE`: a new size, or an amount to add or take away.
#[derive(Debug, Clone, Copy)]
enum SizeChange {
    To(u64),
    Grow(u64),
    Shrink(u64),
}

impl SizeChange {
    fn parse(text: &str) -> Result<Self> {
        let parse = |t: &str| {
            parse_size(t).map_err(|_| {
                Error::argument(format!(
                    "Parameter 'size' expects a non-negative number below 2^64, with an optional suffix \
                     b, k, M, G, T, P or E (1024-based), not {text:?}"
                ))
            })
        };
        Ok(match text.as_bytes().first() {
            Some(b'+') => SizeChange::Grow(parse(&text[1..])?),
            Some(b'-') => SizeChange::Shrink(parse(&text[1..])?),
            _ => SizeChange::To(parse(text)?),
        })
    }

    fn apply(self, current: u64) -> Result<u64> {
        match self {
            SizeChange::To(n) => Ok(n),
            SizeChange::Grow(n) => {
                current.checked_add(n).ok_or_else(|| Error::argument(format!("{current} + {n} bytes is too large")))
            }
            // qemu-img: a shrink past zero is a size that is not positive.
            SizeChange::Shrink(n) => {
                current.checked_sub(n).ok_or_else(|| Error::argument("New image size must be positive"))
            }
        }
    }
}

/// `diskcast resize` arguments, as qemu-img resize takes them.
#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// FILE is qemu's option string `driver=FMT,file.filename=PATH` (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Allow a size smaller than the current one: everything past the new end is lost.
    #[arg(long = "shrink")]
    pub shrink: bool,
    /// How the grown range is allocated: off; falloc or full (raw; qcow2 takes off only).
    #[arg(long = "preallocation", value_name = "MODE", default_value = "off")]
    pub preallocation: String,
    /// Print nothing on success (qemu-img prints "Image resized.").
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The image to resize, in place.
    pub file: PathBuf,
    /// The new size, or +SIZE / -SIZE to grow or shrink by SIZE (suffixes b, K, M, G, T,
    /// P, E, powers of 1024).
    #[arg(allow_hyphen_values = true, value_name = "[+-]SIZE")]
    pub size: String,
}
