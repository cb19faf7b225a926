//! `diskcast write IMAGE DEVICE`: any image diskcast reads onto a block device (a USB
//! stick, a disk, an LV) or over an existing file, made to hold exactly the image.
//!
//! Everything that can refuse does so before a byte is written: the target is resolved
//! (a symlink only to a block device, and then named), checked ([`device::check`]: in
//! use, the system, an input, read-only, too small), described, and confirmed on the
//! terminal unless `--yes`. Then the one output path writes it (the copy engine: ranges
//! the image leaves empty are zeroed by the kernel's write-zeroes, never read or written
//! as data; large writes direct; fsync), and [`verify`] reads it back.

use crate::common::Images;
use crate::common::args::{JobsArgs, OpenArgs, ProgressArgs, WriteArgs};
use crate::common::output::{ImageWriter, interrupt_flag};
use crate::common::progress::Passes;
use clap::Args;
use diskcast_block::device::{self, DeviceInfo};
use diskcast_block::io::ImageFile;
use diskcast_block::output::Output;
use diskcast_block::registry::CreateOptions;
use diskcast_block::{BlockRead, Error, Result, verify};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// `diskcast write` arguments.
#[derive(Debug, Args)]
pub struct WriteImageArgs {
    /// Format of IMAGE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Read DEVICE back after writing and compare it with IMAGE (the default).
    #[arg(long, overrides_with = "no_verify")]
    pub verify: bool,
    /// Do not read DEVICE back after writing.
    #[arg(long = "no-verify", overrides_with = "verify")]
    pub no_verify: bool,
    /// Write without asking. Without it diskcast shows the target and asks on the
    /// terminal, and refuses when there is no terminal to ask on.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// The image: any format diskcast reads (raw, qcow2, VMDK, VHD, VHDX, VDI, an ISO).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The block device to write (a /dev/disk/by-id/... link is followed and the device
    /// it names shown), or an existing regular file (never through a symlink).
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,
}

/// What DEVICE turned out to be.
#[derive(Debug)]
enum Target {
    /// A block device: its real node, and the link the user named, if any.
    Device { path: PathBuf, via: Option<PathBuf> },
    /// An existing regular file, named directly.
    File(PathBuf),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::Device { path, .. } | Target::File(path) => path,
        }
    }
}

pub fn run(a: WriteImageArgs) -> Result<u8> {
    let write = WriteArgs { compress: false, progress: a.progress.clone(), jobs: a.jobs.clone() };
    let inputs = [a.image.as_path()];
    // The target first, as every writing command does: checked and locked before the
    // image is opened.
    let target = DeviceTarget::open(&a.device, &inputs, &write)?;
    let images = Images::new(&a.open)?;
    let image = images.open(&a.image, a.format.as_deref())?;
    images.refuse_unused_disk_choice(&[(&a.image, &image.info().format)])?;
    let what = format!("{}: {}, {}", a.image.display(), image.info().format, bytes(image.size()));
    target.write(image.as_ref(), &what, &Confirm { yes: a.yes, verify: !a.no_verify }, &images)?;
    Ok(0)
}

/// Whether `path` names a block device (directly or through a symlink): the commands
/// that make images (`usb`) then write it as `write` does.
pub fn is_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// What the user allowed: no question asked (`--yes`), read back after (`--verify`).
pub struct Confirm {
    pub yes: bool,
    pub verify: bool,
}

/// A device or existing file resolved, checked as far as it can be without the image
/// and locked: the first step of every command that writes onto a device.
pub struct DeviceTarget {
    target: Target,
    writer: ImageWriter,
    inputs: Vec<PathBuf>,
    write: WriteArgs,
}

impl DeviceTarget {
    pub fn open(given: &Path, inputs: &[&Path], write: &WriteArgs) -> Result<Self> {
        let target = resolve(given)?;
        let writer =
            ImageWriter::onto(Output::open_overwrite(target.path(), inputs)?, "raw", CreateOptions::default(), write)?;
        let inputs = inputs.iter().map(|p| p.to_path_buf()).collect();
        Ok(DeviceTarget { target, writer, inputs, write: write.clone() })
    }

    /// Checks the target against the image (in use, the system, an input, read-only,
    /// too small), shows it, asks unless `--yes`, writes the image, then reads it back
    /// and compares when asked. `what` describes the image on the line shown.
    pub fn write(self, image: &dyn BlockRead, what: &str, confirm: &Confirm, images: &Images) -> Result<()> {
        let DeviceTarget { target, writer, inputs, write } = self;
        let path = target.path().to_path_buf();
        let size = image.size();
        let shown = match &target {
            Target::Device { path, via } => describe_device(path, via.as_deref(), &device::check(path, size, &inputs)?),
            Target::File(path) => describe_file(path)?,
        };
        eprintln!("diskcast: {what} -> {shown}");
        if !confirm.yes {
            ask(&path)?;
        }
        if !ImageFile::direct_io_supported(&path) {
            eprintln!(
                "diskcast: {}: direct I/O (O_DIRECT) is refused here; writing through the page cache",
                path.display()
            );
        }
        let passes = Passes::new(write.progress.reporter(), if confirm.verify { size.saturating_mul(2) } else { size });
        writer.write_reporting(image, &passes)?;
        if confirm.verify {
            let back = images.registry.open_source(verify::written(&path, size)?, Some("raw"), &images.context())?;
            let stop = interrupt_flag()?;
            verify::verify(image, back.as_ref(), &path, write.jobs.count()?, &passes, Some(&stop))?;
        }
        drop(passes);
        let done = if confirm.verify { "written and verified" } else { "written (not verified: --no-verify)" };
        eprintln!("diskcast: {}: {done}", path.display());
        Ok(())
    }
}

/// DEVICE as written: a block device (through a symlink only when it points at one, then
/// the real node is what is checked, shown and opened) or a regular file named directly.
fn resolve(given: &Path) -> Result<Target> {
    let m = std::fs::symlink_metadata(given).map_err(|e| {
        Error::io(
            "cannot find the target (write writes into an existing block device or file; `diskcast convert` \
             makes new image files)",
            e,
        )
        .with_file(given)
    })?;
    let (path, via, m) = if m.file_type().is_symlink() {
        let real =
            std::fs::canonicalize(given).map_err(|e| Error::io("cannot resolve the symlink", e).with_file(given))?;
        let m = std::fs::metadata(&real).map_err(|e| Error::io("cannot open", e).with_file(&real))?;
        if !m.file_type().is_block_device() {
            return Err(Error::argument(format!(
                "the target is a symlink to {}, which is not a block device; write follows symlinks only to \
                 devices (/dev/disk/by-id/...): name the file itself",
                real.display()
            ))
            .with_file(given));
        }
        (real, Some(given.to_path_buf()), m)
    } else {
        (given.to_path_buf(), None, m)
    };
    if m.file_type().is_block_device() {
        Ok(Target::Device { path, via })
    } else if m.is_file() {
        Ok(Target::File(path))
    } else {
        Err(Error::argument(
            "the target is neither a block device nor a regular file; to send an image down a pipe use \
             `diskcast convert -O raw IMAGE -`",
        )
        .with_file(given))
    }
}

/// `/dev/sdb (via /dev/disk/by-id/usb-..): 14.9 GiB, SanDisk Cruzer, partitions sdb1 14.9 GiB`.
fn describe_device(path: &Path, via: Option<&Path>, info: &DeviceInfo) -> String {
    let mut text = path.display().to_string();
    if let Some(link) = via {
        text.push_str(&format!(" (via {})", link.display()));
    }
    text.push_str(&format!(": {}, {}", info.name, bytes(info.size)));
    if let Some(m) = &info.model {
        text.push_str(&format!(", {m}"));
    }
    if let Some(b) = &info.backing_file {
        text.push_str(&format!(", loop device over {b}"));
    }
    if info.partitions.is_empty() {
        text.push_str(", no partitions");
    } else {
        let parts: Vec<String> = info.partitions.iter().map(|(n, s)| format!("{n} {}", bytes(*s))).collect();
        text.push_str(&format!(", partitions: {}", parts.join(", ")));
    }
    text
}

fn describe_file(path: &Path) -> Result<String> {
    let m = std::fs::metadata(path).map_err(|e| Error::io("cannot stat", e).with_file(path))?;
    Ok(format!("{}: a regular file of {} (given the image's length)", path.display(), bytes(m.len())))
}

/// Asks on the terminal; without one there is nobody to ask, so it refuses.
fn ask(path: &Path) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::refused(
            "will not write without confirmation, and standard input is not a terminal to ask on; pass --yes \
             to write anyway",
        )
        .with_file(path));
    }
    eprint!("Everything on {} will be overwritten. Type yes to write: ", path.display());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| Error::io("cannot read the answer", e))?;
    if answer.trim() != "yes" {
        return Err(Error::refused("not confirmed (the answer was not yes); nothing was written").with_file(path));
    }
    Ok(())
}

/// `1.5 GiB (1610612736 bytes)`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = "";
    let mut whole = n;
    let mut tenths = 0;
    for u in UNITS {
        if whole < 1024 {
            break;
        }
        tenths = (whole % 1024) * 10 / 1024;
        whole /= 1024;
        unit = u;
    }
    if unit.is_empty() { format!("{n} bytes") } else { format!("{whole}.{tenths} {unit} ({n} bytes)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(bytes(2 << 30), "2.0 GiB (2147483648 bytes)");
    }
}
