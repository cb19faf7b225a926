//! `diskcast convert`: any readable image to any writable format, in parallel.
//!
//! Two stages, so a mistake on the command line costs nothing: [`Plan::new`] parses and
//! checks every argument, format and `-o` option without opening a file; only a valid
//! plan is [`run`](Plan::run), which opens the source (the only moment a `--replay-log`
//! may write into it) and then writes the target.

mod image;

use crate::common::args::{CacheMode, OpenArgs, ProgressArgs, WriteArgs};
use crate::common::args::{OvaArgs, check_gce_output};
use crate::common::output::{ContainerWriter, ImageWriter, Package, PackageWriter};
use crate::common::progress::{ProgressMode, QemuProgress};
use crate::common::{Images, create_options, image_opts, parse_rate, reads, same_file, url_of};
use clap::Args;
use diskcast_block::copy::DEFAULT_MIN_SPARSE;
use diskcast_block::delta::{Delta, Scope, scope_ranges};
use diskcast_block::filter::Filtered;
use diskcast_block::io::ImageFile;
use diskcast_block::output::{Output, Target, parent_dir, refuse_inputs};
use diskcast_block::provenance::Provenance;
use diskcast_block::registry::{CreateOptions, Driver, PROBE_HEAD, PROBE_TAIL, ProbeData, SnapshotRef};
use diskcast_block::size::parse_size;
use diskcast_block::source::MemSource;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_http::Remote;
use diskcast_layout::u64_from_usize;
use diskcast_vm::Archive;
use diskcast_vm::Profile;
use diskcast_vm::container_disk::Staged;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn run(mut a: ConvertArgs) -> Result<u8> {
    let profile = a.profile.as_deref().map(Profile::parse).transpose()?;
    let snapshot = a.snapshot.is_some() || a.snapshot_opts.is_some();
    if snapshot
        && (diskcast_oci::is_image_ref(&a.dst.to_string_lossy())
            || package_of(&a, profile)?.is_some()
            || profile.is_some())
    {
        return Err(Error::argument(
            "-l and -s read a snapshot of a disk image into a disk image; convert the snapshot to a file first",
        ));
    }
    if let Some(package) = package_of(&a, profile)? {
        QemuFlags::apply(&mut a)?;
        return convert_package(&a, package);
    }
    let staged = match profile {
        Some(p) => apply_profile(&mut a, p)?,
        None => None,
    };
    // kubevirt: the containerDisk's image target is checked before the source is read.
    let container = staged.as_ref().map(|s| ContainerWriter::open(&s.target, &[&a.src], &a.write)).transpose()?;
    // A container image DST (its transport prefix says so) makes this a tree conversion.
    let dst = a.dst.to_string_lossy();
    if diskcast_oci::is_image_ref(&dst) {
        if a.output_format != "raw" || !a.options.is_empty() || a.write.compress || a.no_create {
            return Err(Error::argument("-O, -o, -c and -n apply to disk images, not to a container image DST"));
        }
        return image::convert(&a.src.to_string_lossy(), &dst, a.format.clone(), &a.image, a.open.share, &a.write);
    }
    if !a.image.container.verify_keys.is_empty() {
        return Err(Error::untrusted(format!(
            "--verify-key checks sigstore signatures of a docker:// image; {} is converted as a disk image, \
             which has no registry to hold them (drop --verify-key)",
            a.src.display()
        )));
    }
    let flags = QemuFlags::apply(&mut a)?;
    let images = Images::new(&a.open)?.with_tls(a.image.container.tls);
    let plan = Plan::new(&a, &images)?;
    // -p prints qemu-img's progress lines, on standard output unless the image goes there.
    a.write.progress.qemu = Some(match plan.target.is_stream() {
        true => QemuProgress::Stderr,
        false => QemuProgress::Stdout,
    });
    plan.run(&images, &a, &flags)?;
    if let (Some(mut s), Some(container)) = (staged, container) {
        s.arch = staged_arch(&images, &s)?;
        let r = container.finish_staged(&s, &Provenance::from_env()?)?;
        eprintln!("diskcast: containerDisk {} (manifest {})", s.target, r.manifest_digest);
    }
    Ok(0)
}

/// The guest architecture of the disk a containerDisk wraps, for its image config
/// (KubeVirt nodes pull the image of their own architecture): read from the written
/// qcow2 as `check --profile` reads it (the ESP's kernel or loader, the root type); a
/// disk that says nothing is taken as amd64, with a warning.
fn staged_arch(images: &Images, s: &Staged) -> Result<diskcast_vm::Arch> {
    let disk: std::sync::Arc<dyn diskcast_block::BlockRead> =
        std::sync::Arc::from(images.open(&s.disk, Some("qcow2"))?);
    Ok(diskcast_vm::check::disk_arch(disk).unwrap_or_else(|| {
        eprintln!(
            "diskcast: warning: the disk has no ESP loader, kernel or root partition type that names its \
             architecture; the containerDisk says amd64"
        );
        diskcast_vm::Arch::Amd64
    }))
}

/// The archive DST is, if any: an OVA (`-O ova`, or a `.ova` DST without `-O`; with
/// `--profile esxi|aws` or none) or GCE's tar.gz (`--profile gce`). Checked before
/// anything is opened.
fn package_of(a: &ConvertArgs, profile: Option<Profile>) -> Result<Option<Package>> {
    let named_ova = Archive::Ova.named(&a.dst);
    let fmt = a.output_format.as_str();
    if named_ova && !matches!(fmt, "ova" | "raw") {
        return Err(Error::argument(format!(
            "-O {fmt} contradicts the output's name {}, which says ova; drop -O or rename the output",
            a.dst.display()
        )));
    }
    let ova = fmt == "ova" || named_ova;
    if !ova && profile != Some(Profile::Gce) {
        return Ok(None);
    }
    if !a.options.is_empty() || a.no_create {
        return Err(Error::argument(
            "-o and -n do not apply to an archive output (an OVA's disk is a streamOptimized VMDK, gce's a raw disk)",
        ));
    }
    if ova {
        return Ok(Some(Package::Ova(a.ova.hardware(&a.dst, profile, None)?)));
    }
    if fmt != "raw" {
        return Err(Error::argument(format!("-O {fmt} contradicts --profile gce, which writes disk.raw in a tar.gz")));
    }
    check_gce_output(&a.dst)?;
    Ok(Some(Package::Gce))
}

/// `convert SRC DST` into an archive: DST checked and locked first, then SRC (a file or
/// block device of any format) read once into it.
fn convert_package(a: &ConvertArgs, package: Package) -> Result<u8> {
    let images = Images::new(&a.open)?.with_tls(a.image.container.tls);
    if let Some(f) = &a.format {
        images.registry.get(f)?;
    }
    if let Input::Stream(_) = classify(&a.src)? {
        return Err(Error::argument("an OVA or gce output is made from an image file, not a pipe; save it first")
            .with_file(&a.src));
    }
    let writer = PackageWriter::open(&a.dst, &[&a.src], package, &a.write)?;
    let src = images.open(&a.src, a.format.as_deref())?;
    writer.write(src.as_ref())?;
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

/// A convert job whose every argument has been checked; nothing is opened yet.
#[derive(Debug)]
struct Plan<'r> {
    input: Input,
    /// `-l`/`-s`: the source's internal snapshot to read.
    snapshot: Option<SnapshotRef>,
    driver: &'r dyn Driver,
    create: CreateOptions,
    target: Target,
    /// `-n`: write into the existing file or device.
    in_place: bool,
    /// `-S`: `None` writes every byte.
    min_sparse: Option<u64>,
    /// The unit `-B` compares in: the output's cluster size.
    cluster: u64,
}

impl<'r> Plan<'r> {
    /// Checks the whole command line: formats, `-o` keys and values, flags, the target's
    /// directory, and that the target is not the source. Touches no image.
    fn new(a: &ConvertArgs, images: &'r Images) -> Result<Self> {
        if let Some(f) = &a.format {
            images.registry.get(f)?;
        }
        let input = classify(&a.src)?;
        let snapshot = match (&a.snapshot_opts, &a.snapshot) {
            (Some(l), _) => Some(SnapshotRef::parse(l)?),
            (None, Some(s)) => Some(SnapshotRef::IdOrName(s.clone())),
            (None, None) => None,
        };
        if let (Input::Stream(_), Some(_)) = (&input, &snapshot) {
            return Err(Error::argument(format!(
                "{} is a pipe, read as a raw disk, which has no snapshots (-l/-s)",
                stream_name(&input).display()
            )));
        }
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
        let mut create = create_options(&a.options, a.write.compress)?;
        match (&a.backing, &a.backing_format) {
            (Some(_), None) => {
                return Err(Error::argument("Use of backing file requires explicit backing format (-F)"));
            }
            (None, Some(_)) => return Err(Error::argument("Backing format cannot be used without backing file (-B)")),
            (Some(_), Some(_)) if a.no_create => {
                return Err(Error::argument(
                    "-B makes a new overlay; -n writes into an existing image as it is (drop one of them)",
                ));
            }
            _ => {}
        }
        if a.backing.is_some() && !driver.sets_backing() {
            return Err(Error::argument(format!("Backing file not supported for file format '{}'", driver.name())));
        }
        if let (Some(b), Some(f)) = (&a.backing, &a.backing_format) {
            images.registry.get(f)?;
            if create.options.get("backing_file").is_some_and(|o| o != b) {
                return Err(Error::argument(format!("-B {b} and -o backing_file= name different backing files")));
            }
            (create.backing_file, create.backing_format) = (Some(b.clone()), Some(f.clone()));
            create.options.remove("backing_file");
            create.options.remove("backing_fmt");
        }
        let cluster = match create.options.get("cluster_size") {
            Some(c) => parse_size(c)?,
            None => DEFAULT_COMPARE_UNIT,
        };
        let min_sparse = match a.min_sparse.as_deref().map(parse_size).transpose()?.unwrap_or(DEFAULT_MIN_SPARSE) {
            0 => None,
            n => Some(n),
        };
        a.write.jobs.count()?;
        driver.validate(&create)?;
        let target = Target::of(&a.dst)?;
        let stream_formats = || images.registry.stream_formats().join(", ");
        match &target {
            Target::Stdout | Target::Stream(_) if a.no_create => {
                return Err(Error::argument(
                    "-n writes into an existing image; standard output, a pipe or a character device is not one",
                ));
            }
            Target::Stdout | Target::Stream(_) => driver
                .check_stream(&create)
                .map_err(|e| Error::argument(format!("{e}; formats that can: {}", stream_formats())))?,
            Target::Device(p) if !a.no_create => {
                return Err(
                    Error::argument("the target is a block device; pass -n to write into it (raw)").with_file(p)
                );
            }
            Target::File(p) if a.no_create && !p.is_file() => {
                return Err(Error::argument("-n writes into an existing regular file or block device").with_file(p));
            }
            _ => {}
        }
        if a.no_create && !driver.writes_in_place() && !driver.edits_in_place() {
            return Err(Error::argument(format!(
                "-n writes into an existing image: {}",
                images.registry.not_in_place(driver)
            )));
        }
        if let (true, false, Target::Device(p)) = (a.no_create, driver.writes_in_place(), &target) {
            return Err(Error::argument(format!(
                "-n -O {} writes into an existing image file; a block device is written as raw",
                driver.name()
            ))
            .with_file(p));
        }
        refuse_inputs(&a.dst, &[&a.src])?;
        Ok(Plan { input, snapshot, driver, create, target, in_place: a.no_create, min_sparse, cluster })
    }

    /// Checks and locks the target, opens the source, and writes the target through the
    /// one output path.
    fn run(self, images: &Images, a: &ConvertArgs, flags: &QemuFlags) -> Result<()> {
        // The target first: an image a VM uses is refused before the source is opened
        // (and before any log is replayed into it). Held until the new file replaced it.
        let (path, format) = (self.target.path(), self.driver.name());
        // -B: a relative name is relative to DST's directory, as in qemu-img (and create).
        let backing = a.backing.as_ref().map(|b| parent_dir(path).join(b));
        let inputs = Vec::from_iter(std::iter::once(a.src.clone()).chain(backing.clone()));
        let create = CreateOptions { target_is_zero: a.target_is_zero, ..self.create.clone() };
        let mut writer = match self.in_place {
            true => ImageWriter::onto(Output::open_in_place(path, &inputs)?, format, create, &a.write)?,
            false => ImageWriter::open(path, &inputs, format, create, &a.write)?,
        }
        .min_sparse(self.min_sparse);
        if flags.unsynced {
            writer = writer.unsynced();
        }
        if a.copy_offload {
            writer = writer.offload();
        }
        let src: Box<dyn BlockRead> = match &self.input {
            Input::File(path) => match (&self.snapshot, url_of(path)) {
                (Some(which), None) => images.open_snapshot(path, a.format.as_deref(), which)?,
                (Some(_), Some(_)) => {
                    return Err(Error::argument(
                        "-l/-s read an internal snapshot of a local qcow2; an image over HTTP is read as it is",
                    ));
                }
                (None, Some(url)) => self.open_remote(images, url, a.format.as_deref())?,
                (None, None) => images.open(path, a.format.as_deref())?,
            },
            Input::Stream(_) => self.spool(images, a.format.is_some())?,
        };
        images.refuse_unused_disk_choice(&[(&a.src, &src.info().format)])?;
        let salvaged = Filtered::new(src.as_ref(), reads::Salvage::new(a.src.clone()));
        let src: &dyn BlockRead = if a.salvage { &salvaged } else { src.as_ref() };
        let below = backing.as_ref().map(|b| images.open(b, a.backing_format.as_deref())).transpose()?;
        let delta = match (&below, &self.input) {
            (Some(below), input) => {
                // Where the source's own chain holds BACKING, only what lies above it can differ.
                let chain = match input {
                    Input::File(src_path) => images.chain_files(src_path, a.format.as_deref())?,
                    Input::Stream(_) => Vec::new(),
                };
                let is_backing = |p: &Path| backing.as_deref().is_some_and(|b| same_file(p, b));
                let on_chain = chain.iter().skip(1).position(|c| is_backing(&c.path));
                let scope = on_chain.map_or(Scope::All, |i| Scope::AllocatedAbove(i + 1));
                let ranges = scope_ranges(src, scope)?;
                Some(Delta::new(src.size(), Some(src), ranges).comparing(Some(below.as_ref()), self.cluster))
            }
            (None, _) => None,
        };
        let src: &dyn BlockRead = match &delta {
            Some(d) => {
                writer = writer.delta();
                d
            }
            None => src,
        };
        match flags.rate {
            Some(rate) => writer.write(&Filtered::new(src, reads::RateLimited::new(rate))),
            None => writer.write(src),
        }
    }

    /// A source URL: read at any offset when the server honours ranges. A server that
    /// ignores them sends the whole file, which is read front to back into an unnamed
    /// temporary file as a pipe is; only a raw disk or a streamOptimized VMDK is taken
    /// that way (the format is checked on the first bytes before the rest is read, and
    /// again on the whole file).
    fn open_remote(&self, images: &Images, url: &str, format: Option<&str>) -> Result<Box<dyn BlockRead>> {
        let whole = match diskcast_http::open(url, &images.http)? {
            Remote::Ranged(s) => return images.registry.open_source(Arc::new(s), format, &images.context()),
            Remote::Whole(w) => w,
        };
        let refusal = whole.refusal();
        let refuse = |driver: &str| {
            Error::unsupported(format!("{} (the file is {driver})", refusal.message())).with_file(&whole.name)
        };
        let mut head = Vec::new();
        let mut reader = whole.reader;
        (&mut reader)
            .take(u64_from_usize(PROBE_HEAD))
            .read_to_end(&mut head)
            .map_err(|e| Error::io("cannot read the answer", e).with_file(&whole.name))?;
        let driver = match format {
            Some(f) => images.registry.get(f)?,
            None => images.registry.probe_source(&MemSource::new(&whole.name, head.clone()))?,
        };
        if !matches!(driver.name(), "raw" | "vmdk") {
            return Err(refuse(driver.name()));
        }
        let spool = ImageFile::spool(&mut std::io::Cursor::new(head).chain(reader), &self.spool_dir(), &whole.name)?;
        let got = spool.len()?;
        if whole.len.is_some_and(|n| n != got) {
            return Err(Error::io(
                format!("the answer broke off after {got} of {} bytes", whole.len.unwrap_or_default()),
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            )
            .with_file(&whole.name));
        }
        let found = match format {
            Some(_) => driver,
            None => images.registry.probe_source(&spool)?,
        };
        let image = images.registry.open_source(Arc::new(spool), Some(found.name()), &images.context())?;
        let stream_optimized =
            image.info().specific.get("create-type").and_then(|v| v.as_str()) == Some("streamOptimized");
        match found.name() {
            "raw" => Ok(image),
            "vmdk" if stream_optimized => Ok(image),
            other => Err(refuse(other)),
        }
    }

    /// Where a stream source is spooled: beside the target, which needs the room anyway;
    /// in $TMPDIR for standard output or a device.
    fn spool_dir(&self) -> PathBuf {
        match &self.target {
            Target::File(p) if !self.in_place => parent_dir(p).to_path_buf(),
            _ => std::env::temp_dir(),
        }
    }

    /// Reads a stream source to its end into an unnamed temporary file (beside the target,
    /// which needs the room anyway; in $TMPDIR for standard output or a device) and opens
    /// that as a raw disk. Unless `-f raw` said so, data that another format's probe
    /// claims is refused rather than copied as raw bytes.
    fn spool(&self, images: &Images, format_given: bool) -> Result<Box<dyn BlockRead>> {
        let name = stream_name(&self.input);
        let dir = self.spool_dir();
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

/// The unit `-B` compares the source and the backing file in when `-o cluster_size=` does
/// not say: qcow2's default cluster.
const DEFAULT_COMPARE_UNIT: u64 = 64 << 10;

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

/// What qemu-img's compatibility flags change, once checked (see [`QemuFlags::apply`]).
#[derive(Debug, Default)]
struct QemuFlags {
    /// `-r`: bytes per second.
    rate: Option<u64>,
    /// `-t unsafe`: the output is put in place without a sync.
    unsynced: bool,
}

/// qemu-img's largest `-m`.
const MAX_COROUTINES: usize = 16;

impl QemuFlags {
    /// Checks qemu-img's flags as qemu-img does and folds those that map onto diskcast's
    /// own into them: `--image-opts` into SRC and -f, `-m` into -j, `-q` into no progress.
    fn apply(a: &mut ConvertArgs) -> Result<QemuFlags> {
        if a.image_opts {
            if a.format.is_some() {
                return Err(Error::argument("--image-opts and -f cannot be used together"));
            }
            let (path, format) = image_opts(&a.src.to_string_lossy())?;
            (a.src, a.format) = (path, Some(format));
        }
        if let Some(m) = &a.coroutines {
            let n =
                m.parse::<usize>().ok().filter(|n| (1..=MAX_COROUTINES).contains(n)).ok_or_else(|| {
                    Error::argument("Invalid number of coroutines specified. Must be between 1 and 16.")
                })?;
            a.write.jobs.threads.get_or_insert(n);
        }
        if a.quiet {
            a.write.progress = ProgressArgs { bar: false, mode: ProgressMode::None, qemu: None };
        }
        // qemu-img's checks, in its order, with its messages.
        if a.copy_offload && a.write.compress {
            return Err(Error::argument("Cannot enable copy offloading when -c is used"));
        }
        if a.copy_offload && a.min_sparse.is_some() {
            return Err(Error::argument("Cannot enable copy offloading when -S is used"));
        }
        if a.copy_offload && a.salvage {
            return Err(Error::argument("Cannot use copy offloading in salvaging mode"));
        }
        if a.target_is_zero && !a.no_create {
            return Err(Error::argument("--target-is-zero requires use of -n flag"));
        }
        let rate = a.rate.as_deref().map(parse_rate).transpose()?;
        if let Some(0) = rate {
            return Err(Error::argument("Invalid rate limit specified: '0'."));
        }
        Ok(QemuFlags { rate, unsynced: a.cache == Some(CacheMode::Unsafe) })
    }
}

/// `diskcast convert` arguments.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Format of SRC (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Write what platform P takes (azure, esxi, aws, hyperv, kubevirt, qemu, gce): sets
    /// -O, -o and -c; kubevirt wraps the qcow2 as a containerDisk (DST oci:DIR:TAG or
    /// oci-archive:FILE:TAG); gce writes disk.raw in a tar.gz (DST NAME.tar.gz); esxi or
    /// aws with DST NAME.ova writes an OVA.
    #[arg(long = "profile", value_name = "P")]
    pub profile: Option<String>,
    /// Format of DST (ova: an OVA package; a DST named NAME.ova picks it too).
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// Format options, comma separated (`diskcast formats` lists them); every format also
    /// takes preallocation=off|falloc|full (raw reserves or writes the whole file).
    #[arg(short = 'o', long = "format-options", value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub write: WriteArgs,
    /// Zero runs at least this long become holes (default 4K); 0 writes every byte (fully
    /// allocated).
    #[arg(short = 'S', value_name = "SIZE")]
    pub min_sparse: Option<String>,
    /// Make DST an overlay over BACKING holding only what differs from it (qcow2; needs
    /// -F). BACKING is recorded as given; a relative name is relative to DST's directory.
    #[arg(short = 'B', long = "backing", value_name = "BACKING")]
    pub backing: Option<String>,
    /// Format of BACKING (with -B).
    #[arg(short = 'F', long = "backing-format", value_name = "FMT")]
    pub backing_format: Option<String>,
    /// Do not create DST: write into it as it is: an existing raw file or block device
    /// (a disk, an LV) holding at least the source's size, or an existing qcow2, VDI, VHD,
    /// VHDX or VMDK image whose virtual size is at least the source's (a qcow2's snapshots and
    /// backing file are kept, clusters a snapshot shares copied first; blocks and grains
    /// are added on first write, their tables written last). Written in place, not
    /// through a temporary file.
    #[arg(short = 'n')]
    pub no_create: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    /// Print nothing but errors (no progress).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Target cache mode, as in qemu-img: unsafe skips the sync before DST is put in place
    /// (qemu-img's default); the others, like no -t, sync it.
    #[arg(short = 't', value_name = "CACHE", value_enum)]
    pub cache: Option<CacheMode>,
    /// Source cache mode, as in qemu-img: accepted, reads are the same in every mode.
    #[arg(short = 'T', value_name = "SRC_CACHE", value_enum)]
    pub src_cache: Option<CacheMode>,
    /// Allow out-of-order writes, as in qemu-img: accepted; diskcast always writes in any
    /// order unless the format needs its data in order (compressed, streamOptimized).
    #[arg(short = 'W')]
    pub out_of_order: bool,
    /// qemu-img's parallel coroutines (1 to 16): the thread budget when -j is not given.
    #[arg(short = 'm', value_name = "N")]
    pub coroutines: Option<String>,
    /// Try copy offloading, as qemu-img -C: data a raw source holds is copied by the kernel
    /// (copy_file_range, no trip through memory; on filesystems that share extents, no copy)
    /// into a raw target; holes stay holes, zero blocks inside data are copied as data.
    /// Where the kernel cannot (other filesystems, other formats) the copy goes through
    /// memory, as qemu-img falls back. Not with -c, -S or --salvage.
    #[arg(short = 'C', long = "copy-range-offloading")]
    pub copy_offload: bool,
    /// Copy at most RATE bytes per second (suffixes K, M, G).
    #[arg(short = 'r', value_name = "RATE")]
    pub rate: Option<String>,
    /// Read errors become zeros in DST, with a warning per range, instead of stopping.
    #[arg(long = "salvage")]
    pub salvage: bool,
    /// With -n: DST already reads as zeros, so zero ranges are not written.
    #[arg(long = "target-is-zero")]
    pub target_is_zero: bool,
    /// SRC is qemu's option string driver=FMT,file.filename=PATH (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Read SRC's internal snapshot (qcow2) instead of its current data, as qemu-img
    /// convert -l: snapshot.id=ID, snapshot.name=NAME (both: both must match), or an ID
    /// or a name.
    #[arg(short = 'l', value_name = "SNAPSHOT")]
    pub snapshot_opts: Option<String>,
    /// The same by ID or name (qemu-img's older -s).
    #[arg(short = 's', value_name = "SNAPSHOT", conflicts_with = "snapshot_opts")]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub image: image::ImageWriteArgs,
    #[command(flatten)]
    pub ova: OvaArgs,
    /// The source image. `-`, a pipe or a character device is read to its end first (into
    /// an unnamed temporary file beside DST, or in $TMPDIR) and taken as a raw disk. For a
    /// container image DST: a directory, tar, disk image or image.
    pub src: PathBuf,
    /// The new image, or `-` for standard output (raw, or streamOptimized VMDK); a
    /// container image when it starts with oci:, oci-archive: or docker-archive:, pushed
    /// to a registry when it starts with docker://.
    pub dst: PathBuf,
}
