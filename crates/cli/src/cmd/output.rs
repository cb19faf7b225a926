//! How every command that writes an image gets its output: the target checked and locked
//! ([`diskcast_block::output::Output`]), the format and its options checked, threads,
//! progress and Ctrl-C from the shared [`WriteArgs`], and one write through the copy
//! engine. `convert`, `create`, `mkfs`, `mkdisk`, `vm`, `iso create` and `iso remaster`
//! all write through [`ImageWriter`]; `extract -o` and the container image writers use
//! the same [`Output`] for their front-to-back archives.

use super::{create_options, threads};
use crate::args::{OutputArgs, WriteArgs};
use crate::progress::reporter;
use diskcast_block::copy::CopyOptions;
use diskcast_block::output::{ImageJob, Output};
use diskcast_block::registry::{CreateOptions, Registry};
use diskcast_block::{BlockRead, Error, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

/// The flag Ctrl-C (and SIGTERM, SIGHUP) sets, installed once per process: the copy
/// engine stops at the next item, and the output's files are dropped unnamed.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    ctrlc::set_handler(move || set.store(true, std::sync::atomic::Ordering::Relaxed))
        .map_err(|e| Error::argument(format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(FLAG.get_or_init(|| flag).clone())
}

/// A checked image output: target (refused when in use or one of the inputs), format,
/// options and copy settings. Created before any input is read.
pub struct ImageWriter {
    output: Output,
    registry: Registry,
    format: String,
    create: CreateOptions,
    copy: CopyOptions,
    write: WriteArgs,
}

impl ImageWriter {
    /// The output of `mkfs`, `mkdisk`, `vm`, `iso create`: OUT as `-O FMT`.
    pub fn new<P: AsRef<Path>>(out: &OutputArgs, inputs: &[P]) -> Result<Self> {
        let create = create_options(&out.format_options, out.write.compress)?;
        Self::with(Output::open(&out.output, inputs)?, &out.output_format, create, &out.write, None)
    }

    /// Any output: `output` opened by the caller, `format` with `create`, `min_sparse`
    /// for `-S` (`None`: the copy engine's default).
    pub fn with(
        output: Output,
        format: &str,
        create: CreateOptions,
        write: &WriteArgs,
        min_sparse: Option<Option<u64>>,
    ) -> Result<Self> {
        let registry = diskcast_formats::registry();
        let driver = registry.get(format)?;
        driver.validate(&create)?;
        output.check_format(driver, &create).map_err(|e| {
            if output.target().is_stream() {
                Error::argument(format!("{e}; formats that can be: {}", registry.stream_formats().join(", ")))
            } else {
                e
            }
        })?;
        let mut copy = CopyOptions { threads: threads(write.threads)?, ..CopyOptions::default() };
        if let Some(s) = min_sparse {
            copy.min_sparse = s;
        }
        let format = driver.name().to_string();
        Ok(ImageWriter { output, registry, format, create, copy, write: write.clone() })
    }

    /// Writes `image` (sparse, parallel, compressed with `-c`, progress as asked,
    /// stopped by Ctrl-C) and puts it in place.
    pub fn write(self, image: &dyn BlockRead) -> Result<()> {
        let driver = self.registry.get(&self.format)?;
        let copy = CopyOptions { cancel: Some(interrupt_flag()?), ..self.copy };
        let progress = reporter(self.write.progress, self.write.progress_bar);
        let job = ImageJob { driver, create: &self.create, copy: &copy, progress: progress.as_ref() };
        self.output.write_image(image, job)
    }

    /// Writes an empty image of `size` bytes (`create`): a file only.
    pub fn write_empty(self, size: u64) -> Result<()> {
        let driver = self.registry.get(&self.format)?;
        self.output.write_empty(driver, size, &self.create)
    }
}
