//! What the commands share, below all of them: the argument groups ([`args`]), opening
//! images ([`Images`]), `-o` parsing, the one thread budget ([`threads`]), progress
//! ([`progress`]), read filters (`-r`, `--salvage`: [`reads`]), the one output path
//! ([`output`]), tree sources ([`tree_source`]) and
//! the identities of new filesystems and disks ([`build`]).
//! Nothing here imports a command, and no command imports another.

pub mod args;
pub mod build;
pub mod output;
pub mod progress;
pub mod reads;
pub mod tree_source;

use args::OpenArgs;
pub use args::threads;
use diskcast_block::gate::Gate;
use diskcast_block::lock::{LockMode, Locks};
use diskcast_block::provenance::Provenance;
use diskcast_block::registry::{CreateOptions, OpenContext, Preallocation, Registry};
use diskcast_block::source::{Source, open_file};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_http::HttpOptions;
use std::collections::BTreeMap;
use std::path::Path;

/// An error and the exit status it maps to (1 for most commands, 2 for `compare`).
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub exit_code: u8,
}

/// Errors exit 1, except an image refused for want of a verified signature
/// (`--verify-key`), which exits 4, as `check --profile` does for a rejected image.
impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let exit_code = if error.kind() == diskcast_block::ErrorKind::Untrusted { 4 } else { 1 };
        Failure { error, exit_code }
    }
}

/// The registry and the backing gate a command opens images with.
pub struct Images {
    pub registry: Registry,
    pub gate: Gate,
    /// `--replay-log`: drivers may write a pending log into the image they open.
    pub replay_log: bool,
    /// The qemu-compatible locks on every image opened, held until the command ends.
    pub locks: Locks,
    /// How `http://` and `https://` images are reached (`--tls-verify`).
    pub http: HttpOptions,
    /// `--disk N`: the disk of an OVA read (1-based); `None` the first.
    pub package_disk: Option<usize>,
}

impl Images {
    /// The driver for `path`: format `format` when given (`-f`), else probed.
    pub fn driver(&self, path: &Path, format: Option<&str>) -> Result<&dyn diskcast_block::registry::Driver> {
        match format {
            Some(f) => self.registry.get(f),
            None => self.registry.probe(path),
        }
    }

    pub fn new(open: &OpenArgs) -> Result<Self> {
        let mut gate = Gate::new();
        for p in &open.backing.allow_backing {
            gate.allow(p)?;
        }
        // Replaying a log writes to the input, so it is locked as a target is.
        let mode = if open.replay_log { LockMode::Write } else { open.share.lock_mode() };
        Ok(Images {
            registry: diskcast_formats::registry(),
            gate,
            replay_log: open.replay_log,
            locks: Locks::new(mode),
            http: HttpOptions::default(),
            package_disk: open.disk.and_then(|n| usize::try_from(n).ok()),
        })
    }

    /// Reaches `https://` images with `--tls-verify` as given.
    pub fn with_tls(self, tls: args::TlsArgs) -> Self {
        Images { http: HttpOptions { tls_verify: tls.tls_verify, ..self.http }, ..self }
    }

    /// Opens `path` (a file, or an `http://`/`https://` URL) as `format` (probed when
    /// `None`) with its backing chain.
    pub fn open(&self, path: &Path, format: Option<&str>) -> Result<Box<dyn BlockRead>> {
        self.open_in(path, format, &self.context())
    }

    /// [`open`](Self::open) through `ctx` (one that opens no backing file, say).
    pub fn open_in(&self, path: &Path, format: Option<&str>, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        match url_of(path) {
            Some(url) => self.registry.open_source(diskcast_http::open(url, &self.http)?.ranged()?, format, ctx),
            None => {
                refuse_stream(path)?;
                self.registry.open(path, format, ctx)
            }
        }
    }

    /// `--disk N` chooses a disk of a package (an OVA); where none of the images a command
    /// reads (`opened`: each image's name and format) is one, it would be silently
    /// ignored, so it is refused.
    pub fn refuse_unused_disk_choice(&self, opened: &[(&Path, &str)]) -> Result<()> {
        match self.package_disk {
            Some(n) if !opened.iter().any(|(_, format)| *format == "ova") => {
                let what: Vec<String> = opened.iter().map(|(p, f)| format!("{} is a {f} image", p.display())).collect();
                Err(Error::argument(format!(
                    "--disk {n} chooses a disk of an OVA holding several; {} (drop --disk)",
                    what.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// The bytes of the image at `path` (a file, locked as this command locks its
    /// images, or a URL whose server honours ranges), for commands that read a source
    /// rather than open a disk (`check`).
    pub fn source(&self, path: &Path) -> Result<Source> {
        match url_of(path) {
            Some(url) => diskcast_http::open(url, &self.http)?.ranged(),
            None => {
                refuse_stream(path)?;
                self.locks.lock(path)?;
                open_file(path)
            }
        }
    }

    /// Opens the internal snapshot `which` of the image at `path` (`convert -l`/`-s`),
    /// with its backing chain, locked as [`open`](Self::open) locks.
    pub fn open_snapshot(
        &self,
        path: &Path,
        format: Option<&str>,
        which: &diskcast_block::registry::SnapshotRef,
    ) -> Result<Box<dyn BlockRead>> {
        refuse_stream(path)?;
        let ctx = self.context();
        ctx.lock(path)?;
        self.driver(path, format)?.open_snapshot(diskcast_block::source::open_file(path)?, &ctx, which)
    }

    /// A context that opens backing files through this command's gate.
    pub fn context(&self) -> OpenContext<'_> {
        OpenContext::new(&self.registry, &self.gate)
            .with_log_replay(self.replay_log)
            .with_locks(&self.locks)
            .with_package_disk(self.package_disk)
    }

    /// A context that opens no backing file (`info` without `--backing-chain`).
    pub fn context_without_backing(&self) -> OpenContext<'_> {
        OpenContext::without_backing(&self.registry, &self.gate)
            .with_log_replay(self.replay_log)
            .with_locks(&self.locks)
            .with_package_disk(self.package_disk)
    }
}

/// Images opened by a command that changes some of them in place (`commit`, `rebase`):
/// the command locks each image itself first (a writer's lock on those it writes), so
/// reading them here takes the lock that lets those stand.
pub fn images_for_edit(backing: &args::BackingArgs) -> Result<Images> {
    Images::new(&OpenArgs {
        backing: backing.clone(),
        share: args::ShareArgs { force_share: true },
        ..OpenArgs::default()
    })
}

/// Writes `delta` into an existing image through its in-place `writer` with the copy
/// engine: what the delta reports as held by the target is left alone; reads paced to
/// `rate` bytes per second; qemu-img's progress lines with `progress`; stopped by Ctrl-C.
/// Errors name `path`.
pub fn write_delta(
    delta: &dyn BlockRead,
    writer: Box<dyn diskcast_block::BlockWrite>,
    threads: usize,
    rate: Option<u64>,
    progress: bool,
    path: &Path,
) -> Result<()> {
    use diskcast_block::ResultExt;
    use diskcast_block::copy::{CopyOptions, copy};
    let paced = rate.map(|r| diskcast_block::filter::Filtered::new(delta, reads::RateLimited::new(r)));
    let src: &dyn BlockRead = paced.as_ref().map_or(delta, |p| p);
    let cancel = Some(output::interrupt_flag()?);
    let opts = CopyOptions { skip_backing: true, cancel, ..CopyOptions::new(threads) };
    // `commit -p`, `rebase -p`: qemu-img's lines on standard output.
    let reporter = match progress {
        true => progress::qemu_reporter(progress::QemuProgress::Stdout),
        false => progress::reporter(progress::ProgressMode::None, false),
    };
    copy(src, writer.as_ref(), &opts, reporter.as_ref()).file(path)?;
    writer.finish().file(path)
}

/// One image of a backing chain: its file and its format.
#[derive(Debug, Clone)]
pub struct ChainFile {
    pub path: std::path::PathBuf,
    pub format: String,
}

impl Images {
    /// The files of the backing chain under `top` (itself first), each name resolved
    /// through the gate as opening the chain resolves it; only headers are read and
    /// nothing is locked, so a command can lock them its own way before it opens them.
    pub fn chain_files(&self, top: &Path, format: Option<&str>) -> Result<Vec<ChainFile>> {
        refuse_stream(top)?;
        let ctx = OpenContext::without_backing(&self.registry, &self.gate);
        let (mut path, mut format) = (top.to_path_buf(), format.map(str::to_string));
        let mut files: Vec<ChainFile> = Vec::new();
        let mut canonical = Vec::new();
        loop {
            let info = self.registry.open(&path, format.as_deref(), &ctx)?.info();
            files.push(ChainFile { path: path.clone(), format: info.format.clone() });
            let Some(name) = info.backing_file else { return Ok(files) };
            let next = self.gate.resolve(&path, &name, "backing_file", &canonical)?;
            canonical.push(path.canonicalize().map_err(|e| Error::io("cannot resolve path", e).with_file(&path))?);
            (path, format) = (next, info.backing_format);
        }
    }
}

/// True when `a` and `b` name the same file, through any names (device and inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// The image `depth` levels below `top` in its opened backing chain (0: `top` itself).
pub fn chain_image(top: &dyn BlockRead, depth: usize) -> Option<&dyn BlockRead> {
    (0..depth).try_fold(top, |image, _| image.backing())
}

/// The URL `path` is, when it is an `http://` or `https://` one rather than a file name.
pub fn url_of(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| diskcast_http::is_url(s))
}

/// Refuses a pipe, socket or character device where an image is read at any offset:
/// its length says nothing (a pipe reads as an empty disk). Only `convert` reads them,
/// whole, as raw.
pub fn refuse_stream(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_char_device() || m.file_type().is_socket() => {
            Err(Error::argument(
                "is a pipe or character device, which can only be read front to back; convert reads one \
                 as a raw disk (diskcast convert -f raw SRC out.raw), other commands need a file",
            )
            .with_file(path))
        }
        _ => Ok(()),
    }
}

/// Parses `-o a=b,c=d` (repeatable) into keys and values.
pub fn option_map(options: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for group in options {
        for pair in group.split(',').filter(|p| !p.is_empty()) {
            let (k, v) =
                pair.split_once('=').ok_or_else(|| Error::argument(format!("-o {pair:?}: expected KEY=VALUE")))?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    Ok(map)
}

/// Parses `-o a=b,c=d` (repeatable) plus the flags that map to options.
pub fn create_options(options: &[String], compress: bool) -> Result<CreateOptions> {
    let mut map = option_map(options)?;
    // Every format takes preallocation= (qemu-img passes it to the file under the image).
    let preallocation = map.remove("preallocation").map(|p| Preallocation::parse(&p)).transpose()?.unwrap_or_default();
    // The one place SOURCE_DATE_EPOCH is read: every writer gets its clock and ids from here.
    let provenance = Provenance::from_env()?;
    Ok(CreateOptions { options: map, compress, provenance, preallocation, ..CreateOptions::default() })
}

/// qemu-img's `-r RATE`: bytes per second, with K/M/G suffixes, as qemu-img parses it.
pub fn parse_rate(text: &str) -> Result<u64> {
    diskcast_block::size::parse_size(text)
        .map_err(|_| Error::argument(format!("Invalid rate limit specified: '{text}'.")))
}

/// The name qemu-img gives a format in its output (`vpc` for VHD), so JSON written for
/// qemu-img reads ours unchanged.
pub fn qemu_format_name(name: &str) -> &str {
    match name {
        "vhd" => "vpc",
        other => other,
    }
}

/// Prints pretty JSON on standard output. A reader that went away (`| head`) ends the
/// output quietly; any other write error is reported and exits 1.
pub fn print_json(value: &serde_json::Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("diskcast: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// The image and format a command was given: FILE with `-f FMT`, or with `--image-opts`
/// FILE is qemu's option string (see [`image_opts`]); both at once is refused.
pub fn image_and_format(
    file: &Path,
    with_image_opts: bool,
    format: Option<&String>,
) -> Result<(std::path::PathBuf, Option<String>)> {
    match (with_image_opts, format) {
        (true, Some(_)) => Err(Error::argument("--image-opts and -f cannot be used together")),
        (true, None) => {
            let (p, f) = image_opts(&file.to_string_lossy())?;
            Ok((p, Some(f)))
        }
        (false, f) => Ok((file.to_path_buf(), f.cloned())),
    }
}

/// Opens `path` to change it in place, locked as qemu-img locks an image it writes (a VM
/// or qemu-io using it is refused), with the images context that reads it through other
/// handles our own lock must not stop.
pub fn open_to_change(path: &Path) -> Result<(diskcast_block::io::ImageFile, Images)> {
    let file = diskcast_block::io::ImageFile::open_rw(path)?;
    diskcast_block::lock::apply(file.file(), path, LockMode::Write)?;
    let images = Images::new(&OpenArgs { share: args::ShareArgs { force_share: true }, ..OpenArgs::default() })?;
    Ok((file, images))
}

/// An image named by `--image-opts`: qemu's option string, in its plain forms
/// `driver=FMT,file.filename=PATH` (with `file.driver=file`, or `driver=file,filename=PATH`
/// for a raw file). `,,` is a literal comma, as in qemu. Anything else (protocols, nested
/// drivers, encryption keys) is refused, naming the key.
pub fn image_opts(spec: &str) -> Result<(std::path::PathBuf, String)> {
    // `,,` stands for a comma inside a value; NUL cannot occur in an argument.
    let pairs: Vec<String> = spec.replace(",,", "\0").split(',').map(|p| p.replace('\0', ",")).collect();
    let (mut driver, mut path, mut inner) = (None, None, None);
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Error::argument(format!("--image-opts {spec:?}: {pair:?} is not KEY=VALUE")))?;
        match k {
            "driver" => driver = Some(v.to_string()),
            "file.filename" | "filename" => path = Some(std::path::PathBuf::from(v)),
            "file.driver" => inner = Some(v.to_string()),
            _ => {
                return Err(Error::argument(format!(
                    "--image-opts {spec:?}: option {k:?} is not supported; diskcast takes only the plain forms \
                     driver=FMT,file.filename=PATH and driver=file,filename=PATH"
                )));
            }
        }
    }
    if inner.as_deref().is_some_and(|d| d != "file") {
        return Err(Error::argument(format!(
            "--image-opts {spec:?}: only local files (file.driver=file) are supported"
        )));
    }
    let driver = driver.ok_or_else(|| Error::argument(format!("--image-opts {spec:?}: driver= is missing")))?;
    let path = path.ok_or_else(|| Error::argument(format!("--image-opts {spec:?}: file.filename= is missing")))?;
    match (driver.as_str(), pairs.iter().any(|p| p.starts_with("file.filename="))) {
        ("file", false) => Ok((path, "raw".to_string())),
        ("file", true) => {
            Err(Error::argument(format!("--image-opts {spec:?}: driver=file takes filename=, not file.filename=")))
        }
        (_, false) => Err(Error::argument(format!("--image-opts {spec:?}: driver={driver} takes file.filename=PATH"))),
        _ => Ok((path, driver)),
    }
}

/// The `Signatures:` line of the table and one line per signature checked.
pub fn signature_lines(signatures: &[diskcast_oci::sigstore::SignatureCheck]) {
    if signatures.is_empty() {
        return;
    }
    let verified = signatures.iter().filter(|s| s.verified).count();
    println!("Signatures:   {verified} of {} verified (sigstore)", signatures.len());
    for s in signatures {
        let state = if s.verified { "verified" } else { "not counted" };
        let detail = match (&s.key, &s.reason) {
            (Some(k), None) => format!("key {k}"),
            (_, Some(r)) => r.clone(),
            (None, None) => String::new(),
        };
        println!(
            "  {state:<11} {}  {}  ({detail})",
            s.identity.as_deref().unwrap_or("-"),
            s.digest.as_deref().unwrap_or("-")
        );
    }
}

/// Internal snapshots as `qemu-img snapshot -l` and `qemu-img info` print them: the
/// "Snapshot list:" title, then qemu's columns (dates in UTC, as qemu-img shows them with
/// `TZ=UTC`). Nothing at all when there are none.
pub fn snapshot_table(snaps: &[diskcast_block::SnapshotInfo]) -> String {
    if snaps.is_empty() {
        return String::new();
    }
    let row = |id: &str, tag: &str, size: &str, date: &str, clock: &str, icount: &str| {
        format!("{id:<7} {tag:<16} {size:>8} {date:>19} {clock:>15} {icount:>10}\n")
    };
    let mut out = String::from("Snapshot list:\n");
    out += &row("ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT");
    for s in snaps {
        let c = diskcast_tree::Timestamp::from_secs(i64::from(s.date_sec)).civil();
        let date = format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
        let ms = s.vm_clock_nsec / 1_000_000;
        let clock = format!("{:04}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let icount = s.icount.map(|n| n.to_string()).unwrap_or_default();
        out += &row(&s.id, &s.name, &qemu_size(s.vm_state_size), &date, &clock, &icount);
    }
    out
}

/// One snapshot as `qemu-img info --output=json` lists it under `snapshots`, with its keys.
pub fn snapshot_json(s: &diskcast_block::SnapshotInfo) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": s.id,
        "name": s.name,
        "vm-state-size": s.vm_state_size,
        "date-sec": s.date_sec,
        "date-nsec": s.date_nsec,
        "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
        "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
    });
    if let (Some(n), Some(m)) = (s.icount, v.as_object_mut()) {
        m.insert("icount".into(), n.into());
    }
    v
}

/// A size as qemu prints one in tables: three significant digits in the largest binary
/// unit it reaches (a value from 1000 of a unit on shows in the next: `0.977 KiB`).
fn qemu_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && u128::from(bytes) * 1024 >= 1000u128 << (10 * (unit + 1)) {
        unit += 1;
    }
    // Precision loss is fine: three significant digits are shown.
    #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
    let v = bytes as f64 / (1u64 << (10 * unit)) as f64;
    let text = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text} {}", UNITS[unit])
}
