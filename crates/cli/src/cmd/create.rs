//! `diskcast create`: a new empty image, optionally on top of a backing file.

use super::{Images, create_options, lock_target};
use crate::args::{CreateArgs, OpenArgs};
use diskcast_block::output::OutputFiles;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result, ResultExt};
use std::path::Path;

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
        let dir = a.file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let path = dir.join(backing);
        let below = images.open(&path, a.backing_format.as_deref())?;
        size.get_or_insert(below.size());
        opts.backing_format.get_or_insert_with(|| below.info().format);
    }
    let size = size.ok_or_else(|| Error::argument("give a SIZE (e.g. 10G), or -b BACKING to take its size"))?;
    let _target_lock = lock_target(&a.file)?;
    let out = OutputFiles::new();
    let image = driver.create(&a.file, size, &opts, &out).file(&a.file)?;
    image.finish().file(&a.file)?;
    out.commit()?;
    Ok(0)
}
