//! `diskcast create`: a new empty image, optionally on top of a backing file.

use super::output::ImageWriter;
use super::{Images, create_options};
use crate::args::{CreateArgs, OpenArgs, WriteArgs};
use diskcast_block::output::{Output, parent_dir};
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
    let output = Output::open(&a.file, &Vec::from_iter(backing))?;
    let write =
        WriteArgs { compress: false, progress_bar: false, progress: crate::args::ProgressMode::None, threads: None };
    ImageWriter::with(output, driver.name(), opts, &write, None)?.write_empty(size)?;
    Ok(0)
}
