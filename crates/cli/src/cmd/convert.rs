//! `diskcast convert`: any readable image to any writable format, in parallel.
//!
//! Two stages, so a mistake on the command line costs nothing: [`Plan::new`] parses and
//! checks every argument, format and `-o` option without opening a file; only a valid
//! plan is [`run`](Plan::run), which opens the source (the only moment a `--replay-log`
//! may write into it) and then writes the target.

use super::{Images, create_options, lock_target, threads};
use crate::args::ConvertArgs;
use crate::progress::reporter;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::io::ImageFile;
use diskcast_block::output::OutputFiles;
use diskcast_block::provenance::Provenance;
use diskcast_block::registry::{CreateOptions, Driver, PROBE_HEAD, PROBE_TAIL, ProbeData};
use diskcast_block::size::parse_size;
use diskcast_block::{BlockRead, BlockWrite, Error, Result, ResultExt};
use diskcast_vm::Profile;
use diskcast_vm::container_disk::Staged;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Pipe buffer: large writes keep the reader on the other end busy.
const STDOUT_BUFFER: usize = 4 << 20;

pub fn run(mut a: ConvertArgs) -> Result<u8> {
    let staged = match a.profile.as_deref().map(Profile::parse).transpose()? {
        Some(p) => apply_profile(&mut a, p)?,
        None => None,
    };
    // A container image DST (its transport prefix says so) makes this a tree conversion.
    let dst = a.dst.to_string_lossy();
    if diskcast_oci::is_image_ref(&dst) {
        if a.output_format != "raw" || !a.options.is_empty() || a.write.compress || a.no_create {
            return Err(Error::argument("-O, -o, -c and -n apply to disk images, not to a container image DST"));
        }
        let progress = reporter(a.write.progress, a.write.progress_bar);
        return super::oci::convert(&a.src.to_string_lossy(), &dst, a.format.clone(), &a.image, progress.as_ref());
    }
    let images = Images::new(&a.open)?;
    let plan = Plan::new(&a, &images)?;
    plan.run(&images, &a)?;
    if let Some(s) = staged {
        let r = s.finish(&Provenance::from_env()?, reporter(a.write.progress, a.write.progress_bar).as_ref())?;
        eprintln!("diskcast: containerDisk {} (manifest {})", s.target, r.manifest_digest);
    }
    Ok(0)
}

/// `--profile P`: the profile's format, options and compression, checked against what
/// the user gave. For kubevirt, DST (an image) becomes a temporary qcow2 beside it,
/// wrapped once written.
fn apply_profile(a: &mut ConvertArgs, p: Profile) -> Result<Option<Staged>> {
    // Any source size: Azure wants a whole number of MiB, so round up.
    let extra: &[(&str, &str)] = if p == Profile::Azure { &[("round_size", "1M")] } else { &[] };
    let format = Some(a.output_format.as_str()).filter(|f| *f != "raw");
    let r = p.resolve(format, &a.options, a.write.compress, extra)?;
    (a.output_format, a.options, a.write.compress) = (r.format, r.options, r.compress);
    let staged = Staged::for_output(Some(p), &a.dst.to_string_lossy())?;
    if let Some(s) = &staged {
        a.dst = s.disk.clone();
    }
    Ok(staged)
}

/// Where the source comes from.
#[derive(Debug)]
enum Input {
    /// An image file or a block device, read at any offset.
    File(PathBuf),
    /// Standard input (`None`), or a pipe or character device: only readable front to back
    /// and of unknown size, so it is spooled into a temporary file and read as raw.
    Stream(Option<PathBuf>),
}

/// Where the new image goes.
#[derive(Debug)]
enum Target {
    /// Standard output (`-`): the driver writes strictly front to back.
    Stdout,
    /// A file, written as a temporary beside it and renamed into place.
    File(PathBuf),
    /// An existing file or block device written in place (`-n`).
    InPlace(PathBuf),
}

/// A convert job whose every argument has been checked; nothing is opened yet.
#[derive(Debug)]
struct Plan<'r> {
    input: Input,
    driver: &'r dyn Driver,
    create: CreateOptions,
    target: Target,
    copy: CopyOptions,
}

impl<'r> Plan<'r> {
    /// Checks the whole command line: formats, `-o` keys and values, flags, the target's
    /// directory, and that the target is not the source. Touches no image.
    fn new(a: &ConvertArgs, images: &'r Images) -> Result<Self> {
        if let Some(f) = &a.format {
            images.registry.get(f)?;
        }
        let input = classify(&a.src)?;
        if let (Input::Stream(_), Some(f)) = (&input, &a.format)
            && images.registry.get(f)?.name() != "raw"
        {
            return Err(Error::argument(format!(
                "{} is a pipe, read front to back: only a raw disk can come from one, not -f {f}; save the \
                 image to a file first",
                stream_name(&input).display()
            )));
        }
        let driver = images.registry.get(&a.output_format)?;
        let create = create_options(&a.options, a.write.compress)?;
        let min_sparse = match parse_size(&a.min_sparse)? {
            0 => None,
            n => Some(n),
        };
        let copy = CopyOptions { threads: threads(a.write.threads)?, min_sparse, ..CopyOptions::default() };
        driver.validate(&create)?;
        let target = if a.dst.as_os_str() == "-" {
            if a.no_create {
                return Err(Error::argument("-n writes into an existing image; standard output is not one"));
            }
            driver.check_stream(&create).map_err(|e| {
                Error::argument(format!("{e}; formats that can: {}", images.registry.stream_formats().join(", ")))
            })?;
            Target::Stdout
        } else if a.no_create {
            if !driver.writes_in_place() {
                return Err(Error::argument(format!(
                    "-n (write into an existing image) works for raw targets only, not {}",
                    driver.name()
                )));
            }
            check_in_place_target(&a.dst)?;
            refuse_same_file(&a.src, &a.dst)?;
            Target::InPlace(a.dst.clone())
        } else {
            check_target_path(&a.dst)?;
            refuse_same_file(&a.src, &a.dst)?;
            Target::File(a.dst.clone())
        };
        Ok(Plan { input, driver, create, target, copy })
    }

    /// Opens the source, writes the target, and renames it into place.
    fn run(self, images: &Images, a: &ConvertArgs) -> Result<()> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
            .map_err(|e| Error::argument(format!("cannot install the Ctrl-C handler: {e}")))?;
        let opts = CopyOptions { cancel: Some(cancel), ..self.copy };
        let progress = reporter(a.write.progress, a.write.progress_bar);
        // The target first: an image a VM uses is refused before the source is opened
        // (and before any log is replayed into it). Held until the new file replaced it.
        let _target_lock = match &self.target {
            Target::File(path) | Target::InPlace(path) => lock_target(path)?,
            Target::Stdout => None,
        };
        let src: Box<dyn BlockRead> = match &self.input {
            Input::File(path) => images.open(path, a.format.as_deref())?,
            Input::Stream(_) => self.spool(images, a.format.is_some())?,
        };
        match &self.target {
            Target::Stdout => {
                let out = Box::new(std::io::BufWriter::with_capacity(STDOUT_BUFFER, std::io::stdout()));
                let dst = self.driver.create_stream(out, src.size(), &self.create)?;
                copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref())?;
                dst.finish()
            }
            Target::File(path) => {
                let out = OutputFiles::new();
                let dst: Box<dyn BlockWrite> = self.driver.create(path, src.size(), &self.create, &out).file(path)?;
                copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref()).file(path)?;
                dst.finish().file(path)?;
                out.commit()
            }
            Target::InPlace(path) => {
                let file = ImageFile::open_rw(path)?;
                let dst = self.driver.write_into(file, src.size(), &self.create)?;
                copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref()).file(path)?;
                dst.finish().file(path)
            }
        }
    }

    /// Reads a stream source to its end into an unnamed temporary file (beside the target,
    /// which needs the room anyway; in $TMPDIR for standard output or a device) and opens
    /// that as a raw disk. Unless `-f raw` said so, data that another format's probe
    /// claims is refused rather than copied as raw bytes.
    fn spool(&self, images: &Images, format_given: bool) -> Result<Box<dyn BlockRead>> {
        let name = stream_name(&self.input);
        let dir = match &self.target {
            Target::File(p) => p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(),
            Target::Stdout | Target::InPlace(_) => std::env::temp_dir(),
        };
        let spool = match &self.input {
            Input::Stream(Some(path)) => {
                let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
                ImageFile::spool(&mut f, &dir, &name)?
            }
            _ => ImageFile::spool(&mut std::io::stdin().lock(), &dir, &name)?,
        };
        if !format_given {
            refuse_other_formats(images, &spool)?;
        }
        images.registry.open_source(Arc::new(spool), Some("raw"), &images.context())
    }
}

/// What a stream source is called in messages.
fn stream_name(input: &Input) -> PathBuf {
    match input {
        Input::Stream(Some(p)) | Input::File(p) => p.clone(),
        Input::Stream(None) => PathBuf::from("standard input"),
    }
}

/// `-` is standard input; a pipe, socket or character device is a stream too. Anything
/// else (a file, a block device, or a name that does not exist) is opened as an image.
fn classify(src: &Path) -> Result<Input> {
    use std::os::unix::fs::FileTypeExt;
    if src.as_os_str() == "-" {
        return Ok(Input::Stream(None));
    }
    match std::fs::metadata(src) {
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_char_device() || m.file_type().is_socket() => {
            Ok(Input::Stream(Some(src.to_path_buf())))
        }
        _ => Ok(Input::File(src.to_path_buf())),
    }
}

/// Refuses a spooled stream that a driver recognises by its magic: piping a qcow2 into a
/// raw conversion would copy its metadata as disk content.
fn refuse_other_formats(images: &Images, spool: &ImageFile) -> Result<()> {
    let len = spool.len()?;
    let mut head = vec![0u8; usize::try_from(len.min(PROBE_HEAD as u64)).unwrap_or(PROBE_HEAD)];
    spool.read_exact_at(&mut head, 0)?;
    let tail_len = len.min(PROBE_TAIL as u64);
    let mut tail = vec![0u8; usize::try_from(tail_len).unwrap_or(PROBE_TAIL)];
    spool.read_exact_at(&mut tail, len - tail_len)?;
    let data = ProbeData { head: &head, tail: &tail, file_len: len };
    if let Some(d) = images.registry.drivers().find(|d| d.probe(&data)) {
        return Err(Error::argument(format!(
            "the data looks like a {} image, but a pipe can only be read as a raw disk; save it to a file \
             and convert that (or pass -f raw if it really is a raw disk)",
            d.name()
        ))
        .with_file(spool.path()));
    }
    Ok(())
}

/// `-n` writes into an existing regular file or block device.
fn check_in_place_target(dst: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(dst) {
        Ok(m) if m.is_file() || m.file_type().is_block_device() => Ok(()),
        Ok(_) => {
            Err(Error::argument("-n writes into a regular file or a block device; this is neither").with_file(dst))
        }
        Err(e) => Err(Error::io("-n writes into an existing image, which cannot be opened", e).with_file(dst)),
    }
}

/// The target must be a file name in an existing directory, and not a device (renaming a
/// new file over `/dev/sdb` would replace the device node, not write the disk).
fn check_target_path(dst: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if dst.is_dir() {
        return Err(Error::argument("the target is a directory; name the image file to write").with_file(dst));
    }
    if let Ok(m) = std::fs::metadata(dst)
        && (m.file_type().is_block_device() || m.file_type().is_char_device())
    {
        return Err(Error::argument("the target is a device; pass -n to write into it (raw)").with_file(dst));
    }
    let dir = dst.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::argument(format!("the target's directory {} does not exist", dir.display())).with_file(dst));
    }
    Ok(())
}

/// Refuses a target that is the source itself (same device and inode, through any name
/// or hard link): renaming over it would destroy the input.
fn refuse_same_file(src_path: &Path, dst: &Path) -> Result<()> {
    if src_path.as_os_str() == "-" {
        return Ok(());
    }
    let Ok(target) = std::fs::metadata(dst) else { return Ok(()) };
    let Ok(source) = std::fs::metadata(src_path) else { return Ok(()) }; // opening it will say why
    if (source.dev(), source.ino()) == (target.dev(), target.ino()) {
        return Err(Error::argument(format!(
            "the target {} is the source image itself; write to another file",
            dst.display()
        )));
    }
    Ok(())
}
