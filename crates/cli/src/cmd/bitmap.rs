//! `diskcast bitmap`: persistent dirty bitmaps of a qcow2 image added, removed, cleared,
//! enabled or disabled in place, with qemu-img bitmap's flags, messages and exit codes.

use crate::common::{image_and_format, open_to_change, refuse_stream, same_file};
use clap::Args;
use diskcast_block::registry::BitmapOp;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

pub fn run(a: BitmapArgs) -> Result<u8> {
    let (path, format) = image_and_format(&a.file, a.image_opts, a.format.as_ref())?;
    let mut ops = a.ops()?;
    refuse_stream(&path)?;
    let (file, images) = open_to_change(&path)?;
    let driver = images.driver(&path, format.as_deref())?;
    // -b: another image holds the source bitmap. Only an image of the same format can
    // hold one; in any other qemu-img finds no bitmap of that name, and says so.
    let merge = ops.iter_mut().find(|op| matches!(op, BitmapOp::Merge { .. }));
    if let (Some(src), Some(BitmapOp::Merge { name, source, image })) = (&a.source_file, merge)
        && !same_file(src, &path)
    {
        refuse_stream(src)?;
        if images.driver(src, a.source_format.as_deref())?.name() != driver.name() {
            return Err(Error::argument(format!(
                "Operation merge on bitmap {name} failed: Dirty bitmap '{source}' not found"
            )));
        }
        *image = Some(src.clone());
    }
    driver.bitmap(&file, &ops)?;
    Ok(0)
}

impl BitmapArgs {
    /// The operations asked for, in the order diskcast applies them: add, clear,
    /// enable/disable, merge, remove.
    fn ops(&self) -> Result<Vec<BitmapOp>> {
        let name = self.bitmap.clone();
        let granularity = self.granularity.as_deref().map(parse_size).transpose()?;
        if granularity.is_some() && !self.add {
            return Err(Error::argument("granularity only supported with --add"));
        }
        if self.source_file.is_some() && self.merge.is_none() {
            return Err(Error::argument("-b only supported with --merge"));
        }
        if self.source_format.is_some() && self.source_file.is_none() {
            return Err(Error::argument("-F only supported with -b"));
        }
        let mut ops = Vec::new();
        if self.add {
            ops.push(BitmapOp::Add { name: name.clone(), granularity, disabled: self.disable });
        }
        if self.clear {
            ops.push(BitmapOp::Clear(name.clone()));
        }
        if self.enable {
            ops.push(BitmapOp::Enable(name.clone()));
        }
        if self.disable && !self.add {
            ops.push(BitmapOp::Disable(name.clone()));
        }
        if let Some(source) = &self.merge {
            ops.push(BitmapOp::Merge { name: name.clone(), source: source.clone(), image: None });
        }
        if self.remove {
            ops.push(BitmapOp::Remove(name));
        }
        if ops.is_empty() {
            return Err(Error::argument(
                "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge",
            ));
        }
        Ok(ops)
    }
}

/// `diskcast bitmap` arguments, as qemu-img bitmap takes them.
#[derive(Debug, Args)]
pub struct BitmapArgs {
    /// Add a new persistent bitmap (enabled, unless --disable is given too).
    #[arg(long = "add")]
    pub add: bool,
    /// Remove the bitmap and free its clusters.
    #[arg(long = "remove")]
    pub remove: bool,
    /// Clear every bit of the bitmap.
    #[arg(long = "clear")]
    pub clear: bool,
    /// Let the bitmap record guest writes again.
    #[arg(long = "enable")]
    pub enable: bool,
    /// Stop the bitmap recording guest writes.
    #[arg(long = "disable")]
    pub disable: bool,
    /// Mark dirty in BITMAP every guest byte SOURCE marks dirty (a bitmap of FILE, or of
    /// SRC_FILE with -b; any granularity; the disks must be the same size).
    #[arg(long = "merge", value_name = "SOURCE")]
    pub merge: Option<String>,
    /// The image holding --merge's SOURCE (default: FILE), read only.
    #[arg(short = 'b', value_name = "SRC_FILE")]
    pub source_file: Option<PathBuf>,
    /// Format of SRC_FILE.
    #[arg(short = 'F', value_name = "SRC_FMT")]
    pub source_format: Option<String>,
    /// Bytes of guest data per bit for --add: a power of two from 512 to 2G (default the
    /// cluster size, at least 4K).
    #[arg(short = 'g', value_name = "GRANULARITY")]
    pub granularity: Option<String>,
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// FILE is qemu's option string `driver=FMT,file.filename=PATH` (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// The image, changed in place.
    pub file: PathBuf,
    /// The bitmap's name.
    pub bitmap: String,
}
