//! The one output path of every command that writes an image or an archive: the target
//! checked and locked ([`diskcast_block::output::Output`]) before any input is read, the
//! format and its options checked, then one write with the shared [`WriteArgs`]
//! (threads, progress), stopped by Ctrl-C, and put in place only when complete.
//! `convert`, `create`, `mkfs`, `mkdisk`, `vm`, `iso create`, `iso remaster` and
//! `write` write images through [`ImageWriter`]; `extract -o` writes its tar through [`ArchiveWriter`];
//! container images (`oci:`, `oci-archive:`, `docker-archive:`, `docker://`, kubevirt
//! containerDisks) through [`ContainerWriter`]; disks shipped in an archive (an OVA,
//! GCE's `disk.raw` tar.gz) through [`PackageWriter`].

use super::args::{DiskTarget, WriteArgs};
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
    pub fn new<P: AsRef<Path>>(out: &DiskTarget, inputs: &[P]) -> Result<Self> {
        let create = create_options(&out.format_options, out.write.compress)?;
        Self::open(&out.output, inputs, &out.format, create, &out.write)
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

    /// Writes only what the source does not leave to the target's backing file (a
    /// [`diskcast_block::delta::Delta`] for `convert -B`).
    pub fn delta(mut self) -> Self {
        self.copy.skip_backing = true;
        self
    }

    /// Copy offloading (`convert -C`): data the source stores as it is in a local file is
    /// copied by the kernel (copy_file_range) where the target can take it that way.
    pub fn offload(mut self) -> Self {
        self.copy.offload = true;
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

/// What a [`PackageWriter`] wraps the disk in.
#[derive(Debug, Clone)]
pub enum Package {
    /// An OVA for VMware and VirtualBox: OVF descriptor, manifest, streamOptimized VMDK.
    Ova(diskcast_ova::descriptor::Hardware),
    /// Compute Engine's import tar: `disk.raw`, a whole number of GiB, sparse, gzip'd.
    Gce,
}

/// A checked output whose disk goes into an archive (`-o app.ova`, `--profile gce -o
/// disk.tar.gz`): the target is checked and locked before any input is read, like every
/// other output, and written front to back as an archive, put in place only when
/// complete (Ctrl-C and errors leave nothing).
pub struct PackageWriter {
    output: Output,
    package: Package,
    write: WriteArgs,
}

/// A writer into a file that also hashes and counts what passes (the VMDK of an OVA,
/// whose SHA-256 and size the manifest and the tar header need before its bytes).
struct Hashing {
    file: std::fs::File,
    state: Arc<std::sync::Mutex<(diskcast_ova::manifest::Hasher, u64)>>,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.update(&buf[..n]);
        st.1 += diskcast_layout::u64_from_usize(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl PackageWriter {
    /// Checks and locks `path` (none of `inputs`) before any input is read.
    pub fn open<P: AsRef<Path>>(path: &Path, inputs: &[P], package: Package, write: &WriteArgs) -> Result<Self> {
        write.jobs.count()?;
        Ok(PackageWriter { output: Output::open(path, inputs)?, package, write: write.clone() })
    }

    /// The thread budget (`-j`).
    pub fn threads(&self) -> Result<usize> {
        self.write.jobs.count()
    }

    /// Writes `image` into the archive and puts it in place.
    pub fn write(self, image: &dyn BlockRead) -> Result<()> {
        let cancel = interrupt_flag()?;
        let progress = self.write.progress.reporter();
        let threads = self.threads()?;
        let clock = Provenance::from_env()?;
        let target = self.output.target().path().to_path_buf();
        match &self.package {
            Package::Gce => self.output.write_stream(Some(cancel), |w| {
                diskcast_vm::gce::write(w, image, clock.now(), threads, progress.as_ref()).map(drop)
            }),
            Package::Ova(hw) => {
                // The VMDK's size goes in its tar header before its bytes, and its digest
                // in the manifest before it: it is written once to an unnamed file beside
                // the target (gone with the process, even on kill -9), then copied in.
                let dir = match self.output.target() {
                    diskcast_block::output::Target::File(p) => diskcast_block::output::parent_dir(p).to_path_buf(),
                    _ => std::env::temp_dir(),
                };
                let scratch = diskcast_block::output::scratch(&dir, &target)?;
                let sink = scratch.try_clone().map_err(|e| Error::io("cannot duplicate file handle", e))?;
                let state = Arc::new(std::sync::Mutex::new((diskcast_ova::manifest::Algorithm::Sha256.hasher(), 0u64)));
                let registry = diskcast_formats::registry();
                let driver = registry.get("vmdk")?;
                // The VMDK's own adapter type agrees with the descriptor's controller.
                let adapter = match hw.controller {
                    diskcast_ova::descriptor::Controller::Sata => "ide",
                    _ => "lsilogic",
                };
                let create = create_options(&[format!("subformat=streamOptimized,adapter_type={adapter}")], true)?;
                let dst = driver.create_stream(
                    Box::new(Hashing { file: sink, state: state.clone() }),
                    image.size(),
                    &create,
                )?;
                let copy_opts = CopyOptions { cancel: Some(cancel.clone()), ..CopyOptions::new(threads) };
                diskcast_block::copy::copy(image, dst.as_ref(), &copy_opts, progress.as_ref())
                    .map_err(|e| e.with_file(&target))?;
                dst.finish().map_err(|e| e.with_file(&target))?;
                let (hasher, size) = std::mem::replace(
                    &mut *state.lock().unwrap_or_else(|p| p.into_inner()),
                    (diskcast_ova::manifest::Algorithm::Sha256.hasher(), 0),
                );
                let populated = populated(image)?;
                let mut data = std::io::BufReader::with_capacity(1 << 20, &scratch);
                use std::io::Seek;
                data.seek(std::io::SeekFrom::Start(0)).map_err(|e| Error::io("cannot read back the VMDK", e))?;
                let disk = diskcast_ova::PackageDisk {
                    data: &mut data,
                    size,
                    sha256: hasher.hex(),
                    capacity: image.size(),
                    populated,
                };
                let no_progress = diskcast_block::progress::NoProgress;
                self.output.write_stream(Some(cancel), |w| {
                    diskcast_ova::write_ova(w, hw, disk, clock.now(), &no_progress).map(drop)
                })
            }
        }
    }
}

/// Guest bytes of `image` that hold data: an OVF disk's `populatedSize`.
fn populated(image: &dyn BlockRead) -> Result<u64> {
    let (size, mut at, mut total) = (image.size(), 0u64, 0u64);
    while at < size {
        let e = image.extent_at(at, (1u64 << 30).min(size - at))?;
        if e.len == 0 {
            return Err(Error::invalid(format!("the image's map does not advance at offset {at}")));
        }
        if !e.alloc.reads_zero() {
            total += e.len;
        }
        at = e.end();
    }
    Ok(total)
}
