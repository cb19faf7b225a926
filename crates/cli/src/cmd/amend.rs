//! `diskcast amend`: an image's format options changed in place, with qemu-img amend's
//! flags, messages and exit codes. The format's driver does the work (qcow2: compat,
//! refcount_bits, lazy_refcounts, size); other formats refuse as qemu-img does.

use crate::common::progress::{QemuProgress, qemu_reporter};
use crate::common::{image_and_format, open_to_change, option_map, refuse_stream};
use clap::Args;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

pub fn run(a: AmendArgs) -> Result<u8> {
    let (path, format) = image_and_format(&a.file, a.image_opts, a.format.as_ref())?;
    let opts = option_map(&a.options)?;
    if opts.is_empty() {
        return Err(Error::argument("Must specify options (-o)"));
    }
    refuse_stream(&path)?;
    let (file, images) = open_to_change(&path)?;
    let driver = images.driver(&path, format.as_deref())?;
    // -p: qemu-img's progress lines, from 0 to 100 around the change.
    let progress = (a.progress && !a.quiet).then(|| qemu_reporter(QemuProgress::Stdout));
    if let Some(p) = &progress {
        p.start(1);
    }
    driver.amend(&file, &opts)?;
    if let Some(p) = &progress {
        p.advance(1);
        p.finish();
    }
    Ok(0)
}

/// `diskcast amend` arguments, as qemu-img amend takes them.
#[derive(Debug, Args)]
pub struct AmendArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Options to change, comma separated (qcow2: compat=0.10|1.1, zero clusters expanded
    /// going down; refcount_bits=1..64, lazy_refcounts=on|off, size=SIZE to grow;
    /// backing_file=,backing_fmt= only as they are: `rebase` changes the backing file).
    #[arg(short = 'o', long = "format-options", value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    /// FILE is qemu's option string `driver=FMT,file.filename=PATH` (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Print qemu-img's progress lines on standard output (at the start and the end).
    #[arg(short = 'p')]
    pub progress: bool,
    /// Print nothing but errors (amend prints nothing anyway).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The image to change, in place.
    pub file: PathBuf,
}
