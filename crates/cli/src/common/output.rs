//! The one output path of every command that writes an image or an archive: the target
//! checked and locked ([`diskcast_block::output::Output`]) before any input is read, the
//! format and its options checked, then one write with the shared [`WriteArgs`]
//! (threads, progress), stopped by Ctrl-C, and put in place only when complete.
//! `convert`, `create`, `mkfs`, `mkdisk`, `vm`, `iso create`, `iso remaster` and
//! `write` write images through [`ImageWriter`]; `extract -o` writes its tar through [`ArchiveWriter`];
//! container images (`oci:`, `oci-archive:`, `docker-archive:`, `docker://`, kubevirt
//! containerDisks) through [`ContainerWriter`].

use super::args::{OutputArgs, WriteArgs};
use super::create_options;
use diskcast_block::copy::CopyOptions;
use diskcast_block::output::{ImageJob, Output};
use diskcast_block::progress::Progress;
use diskcast_block::provenance::Provenance;
use diskcast_block::registry::{CreateOptions, Registry};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_oci::write::{ImageTarget, WriteConfig, WriteReport};
use diskcast_tree::Tree;
use diskcast_vm::container_disk::Staged;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The flag Ctrl-C (and SIGTERM, SIGHUP) sets, installed once per process: the copy
/// engine stops at the next item, an archive at its next write, and the output's files
/// are dropped unnamed.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    ctrlc::set_handler(move || set.store(true, Ordering::Relaxed))
        .map_err(|e| Error::argument(format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(FLAG.get_or_init(|| flag).clone())
}

/// A checked image output: target (refused when in use or one of the inputs), format,
/// options and copy settings. Made before any input is read.
pub struct ImageWriter {
    output: Output,
    registry: Registry,
    format: String,
    create: CreateOptions,
    copy: CopyOptions,
    write: WriteArgs,
}

impl ImageWriter {
    /// The output of `mkfs`, `mkdisk`, `vm`: OUT as `-O FMT` with `--format-options`.
    pub fn new<P: AsRef<Path>>(out: &OutputArgs, inputs: &[P]) -> Result<Self> {
        let create = create_options(&out.format_options, out.write.compress)?;
        Self::open(&out.output, inputs, &out.output_format, create, &out.write)
    }

    /// `path` as a new image of `format` with `create`, written as `write` says.
    pub fn open<P: AsRef<Path>>(
        path: &Path,
        inputs: &[P],
        format: &str,
        create: CreateOptions,
        write: &WriteArgs,
    ) -> Result<Self> {
        Self::onto(Output::open(path, inputs)?, format, create, write)
    }

    /// An output opened another way (`Output::open_in_place` for `convert -n`,
    /// `Output::open_overwrite` for `write`) as an image of `format` with `create`.
    pub fn onto(output: Output, format: &str, create: CreateOptions, write: &WriteArgs) -> Result<Self> {
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
        let copy = CopyOptions::new(write.jobs.count()?);
        let format = driver.name().to_string();
        Ok(ImageWriter { output, registry, format, create, copy, write: write.clone() })
    }

    /// `-S`: zero runs of this many bytes become holes; `None` writes every byte.
    pub fn min_sparse(mut self, min_sparse: Option<u64>) -> Self {
        self.copy.min_sparse = min_sparse;
        self
    }

    /// Puts the output in place without syncing it (`-t unsafe`).
    pub fn unsynced(mut self) -> Self {
        self.output = self.output.unsynced();
        self
    }

    /// The thread budget (`-j`), for the work before the write: decoding a container
    /// image's layers.
    pub fn threads(&self) -> usize {
        self.copy.threads
    }

    /// Writes `image` (sparse, parallel, compressed with `-c`, progress as asked,
    /// stopped by Ctrl-C) and puts it in place.
    pub fn write(self, image: &dyn BlockRead) -> Result<()> {
        let progress = self.write.progress.reporter();
        self.write_reporting(image, progress.as_ref())
    }

    /// The same, reporting to `progress` (a command with more passes than the write).
    pub fn write_reporting(self, image: &dyn BlockRead, progress: &dyn Progress) -> Result<()> {
        let driver = self.registry.get(&self.format)?;
        let copy = CopyOptions { cancel: Some(interrupt_flag()?), ..self.copy };
        let job = ImageJob { driver, create: &self.create, copy: &copy, progress };
        self.output.write_image(image, job)
    }

    /// Writes an empty image of `size` bytes (`create`): a file only.
    pub fn write_empty(self, size: u64) -> Result<()> {
        let driver = self.registry.get(&self.format)?;
        self.output.write_empty(driver, size, &self.create)
    }
}

/// A checked archive output (`extract -o OUT.tar`): the same targets as an image,
/// written front to back.
pub struct ArchiveWriter {
    output: Output,
}

impl ArchiveWriter {
    /// Checks and locks `path` (none of `inputs`) before any input is read.
    pub fn open<P: AsRef<Path>>(path: &Path, inputs: &[P]) -> Result<Self> {
        Ok(ArchiveWriter { output: Output::open(path, inputs)? })
    }

    /// Writes the archive with `body` into the target, stopped by Ctrl-C at its next
    /// write, and puts it in place. Errors name the target.
    pub fn write<T>(self, body: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
        self.output.write_stream(Some(interrupt_flag()?), body)
    }
}

/// A checked container image output (`convert SRC oci:..`, a kubevirt containerDisk): an
/// archive target (`oci-archive:`, `docker-archive:`) is checked and locked like every
/// other output before any input is read; the layer is gzipped by the `-j` threads with
/// `-p` progress, stopped by Ctrl-C at its next write, and nothing is put in place
/// unless complete.
pub struct ContainerWriter {
    target: ImageTarget,
    write: WriteArgs,
}

impl ContainerWriter {
    /// Checks `dst` (none of `inputs`, not in use) before any input is read.
    pub fn open<P: AsRef<Path>>(dst: &str, inputs: &[P], write: &WriteArgs) -> Result<Self> {
        let target = ImageTarget::open(diskcast_oci::ImageRef::parse(dst)?, inputs)?;
        Ok(ContainerWriter { target, write: write.clone() })
    }

    /// The image reference written.
    pub fn image_ref(&self) -> &diskcast_oci::ImageRef {
        self.target.image_ref()
    }

    /// The write settings: `-j` threads and the Ctrl-C flag (callers add the image's
    /// config).
    pub fn config(&self) -> Result<WriteConfig> {
        Ok(WriteConfig { cancel: Some(interrupt_flag()?), ..WriteConfig::new(self.write.jobs.count()?) })
    }

    /// Writes `tree` as the image with `cfg` (from [`config`](Self::config)).
    pub fn write(self, tree: &Tree, cfg: &WriteConfig) -> Result<WriteReport> {
        let progress = self.write.progress.reporter();
        diskcast_oci::write::write_image(tree, self.target, cfg, progress.as_ref())
    }

    /// Wraps a kubevirt containerDisk's staged qcow2 into the target.
    pub fn finish_staged(self, staged: &Staged, clock: &Provenance) -> Result<WriteReport> {
        let (cfg, progress) = (self.config()?, self.write.progress.reporter());
        staged.finish(self.target, clock, cfg, progress.as_ref())
    }
}
