//! `diskcast create`: a new empty image, optionally on top of a backing file.

use crate::common::args::{OpenArgs, WriteArgs};
use crate::common::output::ImageWriter;
use crate::common::{Images, create_options};
use clap::Args;
use diskcast_block::output::parent_dir;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result};

pub fn run(a: CreateArgs) -> Result<u8> {
    let images = Images::new(&OpenArgs::default())?;
    let driver = images.registry.get(&a.format)?;
    let mut opts = create_options(&a.options, false)?;
    opts.backing_file = a.backing.clone();
    opts.backing_format = a.backing_format.clone();
    driver.validate(&opts)?; // before anything is opened
    let mut size = a.size.as_deref().map(parse_size).transpose()?;
    if let Some(backing) = &a.backing {
        // The user named this file, so it may be opened; like qemu, a relative name is
        // relative to the new image's directory.
        let path = parent_dir(&a.file).join(backing);
        let below = images.open(&path, a.backing_format.as_deref())?;
        size.get_or_insert(below.size());
        opts.backing_format.get_or_insert_with(|| below.info().format);
    }
    let size = size.ok_or_else(|| Error::argument("give a SIZE (e.g. 10G), or -b BACKING to take its size"))?;
    let backing = opts.backing_file.as_ref().map(|b| parent_dir(&a.file).join(b));
    let inputs = Vec::from_iter(backing);
    ImageWriter::open(&a.file, &inputs, driver.name(), opts, &WriteArgs::default())?.write_empty(size)?;
    Ok(0)
}

/// `diskcast create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Format of the new image.
    #[arg(short = 'f', long = "format", value_name = "FMT", default_value = "raw")]
    pub format: String,
    /// Format options, comma separated (`diskcast formats` lists them); every format also
    /// takes preallocation=off|falloc|full (raw reserves or writes the whole file).
    #[arg(short = 'o', long = "format-options", value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    /// Backing file to record in the new image.
    #[arg(short = 'b', value_name = "BACKING")]
    pub backing: Option<String>,
    /// Format of the backing file (probed if not given).
    #[arg(short = 'F', value_name = "FMT")]
    pub backing_format: Option<String>,
    /// Print nothing but errors (diskcast's create prints nothing anyway; qemu-img's
    /// "Formatting ..." line is what -q hides there).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    pub file: std::path::PathBuf,
    /// Virtual size, e.g. 10G (taken from the backing file if left out).
    pub size: Option<String>,
}
