//! Format drivers and the registry that probes, opens and creates images with them.

use crate::gate::Gate;
use crate::io::ImageFile;
use crate::lock::Locks;
use crate::output::OutputFiles;
use crate::provenance::Provenance;
use crate::source::{ByteSource, Source, open_file, refuse_referenced};
use crate::{Alloc, BlockRead, BlockWrite, Error, Extent, Result, ResultExt};
use diskcast_layout::u64_from_usize;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes from the start of a file that probes see.
pub const PROBE_HEAD: usize = 64 * 1024;
/// Bytes from the end of a file that probes see (VHD footers live there).
pub const PROBE_TAIL: usize = 512;

/// The start and end of a file, for probing by magic.
#[derive(Debug)]
pub struct ProbeData<'a> {
    /// Up to [`PROBE_HEAD`] bytes from offset 0.
    pub head: &'a [u8],
    /// Up to [`PROBE_TAIL`] bytes ending at the file's end.
    pub tail: &'a [u8],
    /// The file's length.
    pub file_len: u64,
}

/// How `create`/`convert` were asked to build an image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `-o key=value` pairs, validated by the driver against [`Driver::options`].
    pub options: BTreeMap<String, String>,
    /// `-c`: compress data clusters.
    pub compress: bool,
    /// `-b`: the backing file name to record in the image.
    pub backing_file: Option<String>,
    /// `-F`: the backing file's format to record.
    pub backing_format: Option<String>,
    /// The clock and identifier source for timestamps, UUIDs and content IDs the image
    /// records (fixed by `SOURCE_DATE_EPOCH`; see [`crate::provenance`]).
    pub provenance: Provenance,
    /// `-o preallocation=`: how much of the new image to allocate up front. `metadata`
    /// only for formats whose options list `preallocation`; `falloc` and `full` are
    /// accepted by every format, as qemu-img accepts them (formats without the option
    /// ignore them: qemu-img applies them only to their small initial file).
    pub preallocation: Preallocation,
    /// `--target-is-zero` (with `convert -n`): the existing target already reads as
    /// zeros, so zero ranges need not be written.
    pub target_is_zero: bool,
}

/// How a format turns `-o` options into its writer's parameters for a disk of `size` bytes.
pub type ParseParams<P> = fn(u64, &CreateOptions) -> Result<P>;

/// A nominal disk size for [`CreateOptions::validate_with`]: only the options are checked.
const NOMINAL_SIZE: u64 = 1 << 30;

impl CreateOptions {
    /// The driver's parameters for a disk of `size` bytes, after refusing unknown keys: the
    /// start of every format's `create` and `measure`.
    pub fn params<P>(&self, driver: &dyn Driver, size: u64, parse: ParseParams<P>) -> Result<P> {
        self.check_keys(driver)?;
        parse(size, self)
    }

    /// [`Driver::validate`] for a format whose options are all in its parameters: keys and
    /// values parsed for a nominal disk, nothing opened.
    pub fn validate_with<P>(&self, driver: &dyn Driver, parse: ParseParams<P>) -> Result<()> {
        self.params(driver, NOMINAL_SIZE, parse).map(drop)
    }

    /// Rejects any `-o` key the driver does not know, listing those it does.
    pub fn check_keys(&self, driver: &dyn Driver) -> Result<()> {
        self.check_keys_of(driver.name(), driver.options())
    }

    /// Rejects any `-o` key not in `known`, the options of format `format`.
    pub fn check_keys_of(&self, format: &str, known: &[OptionSpec]) -> Result<()> {
        if self.preallocation == Preallocation::Metadata && !known.iter().any(|o| o.name == "preallocation") {
            return Err(Error::argument(format!(
                "Unsupported preallocation mode: metadata ({format} images have no metadata to preallocate)"
            )));
        }
        for key in self.options.keys() {
            if !known.iter().any(|o| o.name == key) {
                let names: Vec<_> = known.iter().map(|o| o.name).collect();
                return Err(Error::argument(format!(
                    "format {format} has no option {key:?} (it takes: {})",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                )));
            }
        }
        Ok(())
    }
}

/// One `-o` option a driver accepts, for validation and `--help`.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// Key as typed after `-o`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// What `check` found, with qemu-img's meaning for the counts. Serialized with qemu-img
/// check's JSON key names (`check-errors`, `image-end-offset`, ...).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// Metadata that contradicts itself or the file (refcount too low, entry past EOF...).
    pub corruptions: u64,
    /// Clusters allocated but used by nothing.
    pub leaks: u64,
    /// Errors that stopped the check from looking at something.
    pub check_errors: u64,
    /// `check -r`: leaked clusters whose refcounts were lowered.
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks_fixed: u64,
    /// `check -r all`: corruptions repaired (refcounts raised, OFLAG_COPIED corrected).
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions_fixed: u64,
    /// One line per problem found.
    pub messages: Vec<String>,
    /// Clusters in use / total guest clusters, as qemu-img prints them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_clusters: Option<u64>,
    /// Guest clusters in the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_clusters: Option<u64>,
    /// Compressed clusters among the allocated ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed_clusters: Option<u64>,
    /// Allocated clusters not right after the previous one in their L2 table (every
    /// compressed cluster counts), as qemu-img counts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragmented_clusters: Option<u64>,
    /// First byte after the last used cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_end_offset: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `check -r` may repair, with qemu-img's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// `-r leaks`: only clusters whose refcount is higher than their references.
    Leaks,
    /// `-r all`: every inconsistency the check finds and can repair.
    All,
}

impl Repair {
    /// Parses qemu-img's `-r` values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "leaks" => Ok(Repair::Leaks),
            "all" => Ok(Repair::All),
            _ => Err(Error::argument(format!("Unknown option value for -r (expecting 'leaks' or 'all'): {s}"))),
        }
    }
}

/// One `bitmap` operation on a persistent dirty bitmap, with qemu-img bitmap's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitmapOp {
    /// `--add NAME [-g GRANULARITY]`, enabled unless `--disable` comes with it.
    Add { name: String, granularity: Option<u64>, disabled: bool },
    /// `--remove NAME`.
    Remove(String),
    /// `--clear NAME`: every bit cleared.
    Clear(String),
    /// `--enable NAME`: the bitmap records writes again.
    Enable(String),
    /// `--disable NAME`.
    Disable(String),
    /// `--merge SOURCE [-b FILE] NAME`: `image` is FILE when it is another image (of the
    /// same format; read only), `None` for a bitmap of the image being changed.
    Merge { name: String, source: String, image: Option<std::path::PathBuf> },
}

impl BitmapOp {
    /// qemu-img's word for the operation, for its "Operation X on bitmap N failed" message.
    pub fn verb(&self) -> &'static str {
        match self {
            BitmapOp::Add { .. } => "add",
            BitmapOp::Remove(_) => "remove",
            BitmapOp::Clear(_) => "clear",
            BitmapOp::Enable(_) => "enable",
            BitmapOp::Disable(_) => "disable",
            BitmapOp::Merge { .. } => "merge",
        }
    }

    /// The bitmap it changes.
    pub fn name(&self) -> &str {
        match self {
            BitmapOp::Add { name, .. } | BitmapOp::Merge { name, .. } => name,
            BitmapOp::Remove(n) | BitmapOp::Clear(n) | BitmapOp::Enable(n) | BitmapOp::Disable(n) => n,
        }
    }
}

/// How large an image of a format would be, as `qemu-img measure` reports it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measure {
    /// Bytes needed for the data the source really holds plus metadata.
    pub required: u64,
    /// Bytes needed if every guest byte were allocated.
    pub fully_allocated: u64,
}

/// How many `unit`-byte units (clusters, grains, blocks) of a `size`-byte disk the `Data`
/// and `Backing` extents in `data` touch, each unit counted once: what a format that
/// allocates whole units needs for that data, as `Driver::measure` reports it.
pub fn units_touched(data: &[Extent], size: u64, unit: u64) -> u64 {
    let mut ext: Vec<&Extent> = data.iter().filter(|e| matches!(e.alloc, Alloc::Data | Alloc::Backing)).collect();
    ext.sort_by_key(|e| e.offset);
    let (mut units, mut covered) = (0u64, 0u64); // `covered`: first unit not yet counted
    for e in ext {
        let end = e.end().min(size);
        if e.offset >= end {
            continue;
        }
        let first = (e.offset / unit).max(covered);
        let last = end.div_ceil(unit);
        if last > first {
            units += last - first;
            covered = last;
        }
    }
    units
}

/// The [`Driver`] methods every writable format spells the same way, written once:
/// `options` (its `-o` keys) and `validate` (parsed by `params` for a nominal disk);
/// with `create:`, `create` writing one new file by `create(file, params)`; with
/// `check:`, `check` by `check(src)` with errors naming the image. What a format does
/// stays in the functions it names here.
///
/// ```ignore
/// impl Driver for VdiDriver {
///     // name, probe, open, measure ...
///     diskcast_block::driver_methods! {
///         options: OPTIONS,
///         params: writer::Params::from_options,
///         create: VdiWriter::new,
///         check: check::check,
///     }
/// }
/// ```
#[macro_export]
macro_rules! driver_methods {
    (options: $options:expr, params: $params:expr $(, create: $create:expr)? $(, check: $check:expr)? $(,)?) => {
        fn options(&self) -> &'static [$crate::registry::OptionSpec] {
            $options
        }

        fn validate(&self, opts: &$crate::registry::CreateOptions) -> $crate::Result<()> {
            opts.validate_with(self, $params)
        }

        $(
            fn create(
                &self,
                path: &::std::path::Path,
                size: u64,
                opts: &$crate::registry::CreateOptions,
                out: &$crate::output::OutputFiles,
            ) -> $crate::Result<Box<dyn $crate::BlockWrite>> {
                let params = opts.params(self, size, $params)?;
                Ok(Box::new(($create)(out.create(path)?, params)?))
            }
        )?

        $(
            fn check(
                &self,
                src: $crate::source::Source,
                _ctx: &$crate::registry::OpenContext<'_>,
            ) -> $crate::Result<$crate::registry::CheckReport> {
                $crate::registry::check_named(src, $check)
            }
        )?
    };
}

/// [`Driver::check`] for a checker that reads the source: its errors name the image.
pub fn check_named(src: Source, check: impl FnOnce(Source) -> Result<CheckReport>) -> Result<CheckReport> {
    let name = src.name().to_path_buf();
    check(src).file(name)
}

/// How `resize` (and `-o preallocation=`) allocates a grown range, with qemu's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// Nothing allocated: the new range is a hole or unallocated clusters.
    #[default]
    Off,
    /// The format's metadata (L2 tables, cluster entries) allocated, data left sparse.
    Metadata,
    /// Space reserved with fallocate, reading as zeros.
    Falloc,
    /// Zeros written.
    Full,
}

impl Preallocation {
    /// Parses qemu's names; anything else is qemu-img's "Invalid preallocation mode".
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(Preallocation::Off),
            "metadata" => Ok(Preallocation::Metadata),
            "falloc" => Ok(Preallocation::Falloc),
            "full" => Ok(Preallocation::Full),
            _ => Err(Error::argument(format!("Invalid preallocation mode '{s}' (off, metadata, falloc or full)"))),
        }
    }

    /// qemu's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            Preallocation::Off => "off",
            Preallocation::Metadata => "metadata",
            Preallocation::Falloc => "falloc",
            Preallocation::Full => "full",
        }
    }
}

/// A disk image format.
pub trait Driver: Send + Sync {
    /// The name used with `-f`/`-O` (`raw`, `qcow2`, ...).
    fn name(&self) -> &'static str;

    /// Other names `-f`/`-O` accept for this format (qemu's `vpc` for VHD).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// True when the file's magic says it is this format. Raw never claims a file.
    fn probe(&self, data: &ProbeData<'_>) -> bool;

    /// Opens the image held in `src` for reading. Backing files go through `ctx`.
    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>>;

    /// The `-o` options [`create`](Self::create) accepts.
    fn options(&self) -> &'static [OptionSpec] {
        &[]
    }

    /// Checks `-o` keys and values and flags such as `-c` without touching any file, so a
    /// command can refuse a bad option before it opens (or replays a log into) an input.
    /// Only checks that need the disk's size are left to [`create`](Self::create).
    fn validate(&self, opts: &CreateOptions) -> Result<()> {
        opts.check_keys_of(self.name(), self.options())
    }

    /// Creates a new image of `size` guest bytes. Every file it writes must come from
    /// `out`, which renames them into place only after the caller commits.
    fn create(&self, path: &Path, size: u64, opts: &CreateOptions, out: &OutputFiles) -> Result<Box<dyn BlockWrite>>;

    /// Whether an image with `opts` can be written front to back into a stream that
    /// cannot seek (standard output, a pipe): `Ok` when [`create_stream`](Self::create_stream)
    /// will accept it, otherwise an error saying why and what would work. Most formats
    /// seek back to write their metadata and cannot.
    fn check_stream(&self, _opts: &CreateOptions) -> Result<()> {
        Err(Error::argument(format!(
            "format {} cannot be written to standard output or a pipe: its writer seeks back into the file",
            self.name()
        )))
    }

    /// Whether [`write_into`](Self::write_into) works: the image is the guest bytes
    /// themselves, so it can be written over an existing file or block device.
    fn writes_in_place(&self) -> bool {
        false
    }

    /// Whether [`write_into`](Self::write_into) works on an existing image of this format
    /// (qcow2, VDI, VHD, VHDX, VMDK): `convert -n`, `commit` and `bench -w` then write guest
    /// data into that image's clusters or blocks, keeping its metadata (snapshots,
    /// backing file), as qemu-img does.
    fn edits_in_place(&self) -> bool {
        false
    }

    /// Writes a new image of `size` guest bytes straight into `file` (`convert -n`): for
    /// a format that [`writes_in_place`](Self::writes_in_place), an existing file or block
    /// device holding at least `size` bytes; for one that
    /// [`edits_in_place`](Self::edits_in_place), an existing image of the format whose
    /// virtual size is at least `size`. Nothing is renamed into place and nothing starts
    /// out zeroed unless the writer says so: it must write zeros where the disk reads as
    /// zero.
    fn write_into(&self, file: ImageFile, _size: u64, _opts: &CreateOptions) -> Result<Box<dyn BlockWrite>> {
        Err(Error::argument(format!("format {} cannot be written into an existing image (-n)", self.name()))
            .with_file(file.path()))
    }

    /// The `-o` options under which this format can be streamed, for messages and
    /// `diskcast formats`: `None` never, `Some("")` always, `Some("subformat=...")` with
    /// those options. [`check_stream`](Self::check_stream) decides.
    fn stream_options(&self) -> Option<&'static str> {
        None
    }

    /// Writes a new image of `size` guest bytes into `out`, strictly in order (see
    /// [`check_stream`](Self::check_stream)).
    fn create_stream(
        &self,
        _out: Box<dyn Write + Send>,
        _size: u64,
        opts: &CreateOptions,
    ) -> Result<Box<dyn BlockWrite>> {
        self.check_stream(opts)?;
        Err(Error::unsupported(format!("format {} has no stream writer", self.name())))
    }

    /// Checks the metadata of the image held in `src`. Formats without a checker return
    /// [`ErrorKind::NotApplicable`](crate::ErrorKind::NotApplicable) (qemu-img exit 63);
    /// an image the checker cannot read (an encrypted qcow2) is `Unsupported` like any
    /// other open failure (exit 1).
    fn check(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<CheckReport> {
        Err(Error::not_applicable(format!("format {} has no consistency check", self.name())).with_file(src.name()))
    }

    /// Repairs the image in `file` (opened for writing and locked as a writer) as
    /// `qemu-img check -r` does; the report counts what was fixed (`leaks_fixed`,
    /// `corruptions_fixed`) and what is left. Formats without a repair say so.
    fn repair(&self, file: &ImageFile, _fix: Repair) -> Result<CheckReport> {
        Err(Error::not_applicable(format!("format {} has no repair (check -r)", self.name())).with_file(file.path()))
    }

    /// Applies `ops` in order to the persistent dirty bitmaps of the image in `file`
    /// (opened for writing and locked as a writer), as `qemu-img bitmap` does.
    fn bitmap(&self, file: &ImageFile, _ops: &[BitmapOp]) -> Result<()> {
        Err(Error::unsupported(format!("format {} has no persistent dirty bitmaps (qcow2 has)", self.name()))
            .with_file(file.path()))
    }

    /// Changes the options `opts` (`-o` keys and values) of the image in `file` (opened
    /// for writing and locked as a writer) in place, as `qemu-img amend` does. Formats
    /// that cannot refuse with qemu-img's message.
    fn amend(&self, file: &ImageFile, _opts: &BTreeMap<String, String>) -> Result<()> {
        Err(Error::unsupported(format!("Format driver '{}' does not support option amendment", self.name()))
            .with_file(file.path()))
    }

    /// Changes the virtual size of the image in `file` (opened for writing and locked as a
    /// writer) to `size` in place, as `qemu-img resize` does; `size` below the current
    /// size only when the user passed `--shrink`. Formats qemu-img cannot resize refuse
    /// with its message.
    fn resize(&self, file: &ImageFile, _size: u64, _prealloc: Preallocation) -> Result<()> {
        Err(Error::unsupported(format!(
            "Image format driver does not support resize (qemu-img cannot resize {} images either)",
            self.name()
        ))
        .with_file(file.path()))
    }

    /// Whether [`set_backing`](Self::set_backing) can change this format's backing file:
    /// asked before a safe `rebase` writes any data.
    fn sets_backing(&self) -> bool {
        false
    }

    /// Records `backing` (file name as it is to be stored, and its format), or no backing
    /// file, in the image in `file` (opened for writing and locked as a writer), leaving
    /// its data alone (`rebase`). Formats qemu-img cannot rebase refuse with its message.
    fn set_backing(&self, file: &ImageFile, backing: Option<(&str, &str)>) -> Result<()> {
        Err(Error::unsupported(format!(
            "Could not change the backing file to '{}': Operation not supported (qemu-img cannot change the \
             backing file of {} images either)",
            backing.map_or("", |b| b.0),
            self.name()
        ))
        .with_file(file.path()))
    }

    /// Why [`make_empty`](Self::make_empty) would refuse the image in `file`, or `None`:
    /// asked before a `commit` writes anything.
    fn empty_refusal(&self, _file: &ImageFile) -> Result<Option<String>> {
        Ok(None)
    }

    /// Makes every range of the overlay in `file` read from its backing file again, as
    /// qemu-img empties the image it committed. `Ok(false)`: the format cannot, and the
    /// image stays as it is (qemu-img leaves those formats alone too).
    fn make_empty(&self, _file: &ImageFile) -> Result<bool> {
        Ok(false)
    }

    /// The internal snapshots of the image in `src`, every table entry checked (a broken
    /// table is an error, not an empty list). Formats without them have none, as
    /// `qemu-img snapshot -l` lists none.
    fn snapshots(&self, _src: Source) -> Result<Vec<crate::SnapshotInfo>> {
        Ok(Vec::new())
    }

    /// Creates, applies or deletes an internal snapshot of the image in `file` (opened
    /// for writing and locked as a writer), as `qemu-img snapshot -c/-a/-d` does;
    /// returns the snapshot made by `Create`. Formats without internal snapshots refuse.
    fn snapshot(&self, file: &ImageFile, _op: &SnapshotOp) -> Result<Option<crate::SnapshotInfo>> {
        Err(no_snapshots(self.name()).with_file(file.path()))
    }

    /// Opens the internal snapshot `which` of the image in `src` for reading, as
    /// `qemu-img convert -l`/`-s` reads one (backing files through `ctx`).
    fn open_snapshot(&self, src: Source, _ctx: &OpenContext<'_>, _which: &SnapshotRef) -> Result<Box<dyn BlockRead>> {
        Err(no_snapshots(self.name()).with_file(src.name()))
    }

    /// How large a new image holding the `data` extents of a `size`-byte disk would be.
    fn measure(&self, size: u64, data: &[Extent], opts: &CreateOptions) -> Result<Measure>;

    /// Bytes a new image would need to carry the source's persistent `bitmaps` over
    /// (qemu-img measure's `bitmaps`), or `None` when this format (or these options)
    /// cannot store them.
    fn measure_bitmaps(
        &self,
        _size: u64,
        _bitmaps: &[crate::PersistentBitmap],
        _opts: &CreateOptions,
    ) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// qemu-img's refusal for a format without internal snapshots.
fn no_snapshots(format: &str) -> Error {
    Error::unsupported(format!("Format driver '{format}' does not support internal snapshots (qcow2 images have them)"))
}

/// What `snapshot` does to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOp {
    /// `-c NAME`: a new snapshot of the active image.
    Create(String),
    /// `-a ID_OR_NAME`: the active image reverts to the snapshot.
    Apply(String),
    /// `-d NAME`: the snapshot is dropped.
    Delete(String),
}

/// Which snapshot `convert -l`/`-s` reads, in qemu-img's forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRef {
    /// `-l X` or `-s X`: the snapshot whose ID is X, else whose name is X.
    IdOrName(String),
    /// `-l snapshot.id=X`.
    Id(String),
    /// `-l snapshot.name=X`.
    Name(String),
    /// `-l snapshot.id=X,snapshot.name=Y`: both must match.
    IdAndName(String, String),
}

impl SnapshotRef {
    /// Parses `-l`'s argument: `snapshot.id=ID`, `snapshot.name=NAME` (or both, comma
    /// separated), or a plain ID or name.
    pub fn parse(text: &str) -> Result<Self> {
        if !text.starts_with("snapshot.") {
            return Ok(SnapshotRef::IdOrName(text.to_string()));
        }
        let (mut id, mut name) = (None, None);
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("snapshot.id", v)) => id = Some(v.to_string()),
                Some(("snapshot.name", v)) => name = Some(v.to_string()),
                _ => {
                    return Err(Error::argument(format!(
                        "Invalid snapshot option {part:?}: use snapshot.id=ID, snapshot.name=NAME or a plain ID or name"
                    )));
                }
            }
        }
        Ok(match (id, name) {
            (Some(i), Some(n)) => SnapshotRef::IdAndName(i, n),
            (Some(i), None) => SnapshotRef::Id(i),
            (None, Some(n)) => SnapshotRef::Name(n),
            (None, None) => return Err(Error::argument("snapshot option without an ID or name")),
        })
    }

    /// Whether a snapshot with `id` and `name` is the one meant, by ID only (for
    /// [`IdOrName`](Self::IdOrName), the ID is tried on every snapshot before the name).
    pub fn matches(&self, id: &str, name: &str, by_name: bool) -> bool {
        match self {
            SnapshotRef::IdOrName(k) => {
                if by_name {
                    name == k
                } else {
                    id == k
                }
            }
            SnapshotRef::Id(k) => !by_name && id == k,
            SnapshotRef::Name(k) => by_name && name == k,
            SnapshotRef::IdAndName(i, n) => !by_name && id == i && name == n,
        }
    }
}

impl std::fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotRef::IdOrName(k) => write!(f, "'{k}'"),
            SnapshotRef::Id(k) => write!(f, "with ID '{k}'"),
            SnapshotRef::Name(k) => write!(f, "named '{k}'"),
            SnapshotRef::IdAndName(i, n) => write!(f, "with ID '{i}' and name '{n}'"),
        }
    }
}

impl std::fmt::Debug for dyn Driver + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({})", self.name())
    }
}

/// Everything opening an image may need: the registry for backing files of another
/// format, the gate that decides which files may be opened, and the chain so far.
#[derive(Debug)]
pub struct OpenContext<'a> {
    /// Drivers for backing files.
    pub registry: &'a Registry,
    /// Which referenced files may be opened.
    pub gate: &'a Gate,
    /// Canonical paths of the images above the one being opened.
    chain: Vec<PathBuf>,
    /// Whether backing files are opened at all (not for `info` without `--backing-chain`).
    follow_backing: bool,
    /// Whether a driver may write to an image it opens to finish an interrupted update
    /// (replaying a VHDX log). Off unless the user asked for it.
    replay_log: bool,
    /// Where the locks on every image opened through this context are kept, when
    /// images are locked at all (the binary does; library callers may not).
    locks: Option<&'a Locks>,
    /// `--disk N`: which disk (1-based, in the descriptor's order) of a package holding
    /// several (an OVA) is read; `None` reads the first.
    package_disk: Option<usize>,
}

impl<'a> OpenContext<'a> {
    /// A context for opening a top-level image the user named, with its backing chain.
    pub fn new(registry: &'a Registry, gate: &'a Gate) -> Self {
        OpenContext {
            registry,
            gate,
            chain: Vec::new(),
            follow_backing: true,
            replay_log: false,
            locks: None,
            package_disk: None,
        }
    }

    /// A context that opens no backing file: enough to describe an image (as `qemu-img
    /// info` does by default), not to read it. Lets a user inspect an untrusted image
    /// whose backing name the gate would refuse.
    pub fn without_backing(registry: &'a Registry, gate: &'a Gate) -> Self {
        OpenContext { follow_backing: false, ..Self::new(registry, gate) }
    }

    /// Lets drivers write to the images they open to replay a pending log (`--replay-log`).
    pub fn with_log_replay(self, replay_log: bool) -> Self {
        OpenContext { replay_log, ..self }
    }

    /// Locks every image opened through this context (backing files too) as qemu does,
    /// keeping the locks in `locks`.
    pub fn with_locks(self, locks: &'a Locks) -> Self {
        OpenContext { locks: Some(locks), ..self }
    }

    /// Reads disk `n` (1-based) of a package of several disks (`--disk N`).
    pub fn with_package_disk(self, package_disk: Option<usize>) -> Self {
        OpenContext { package_disk, ..self }
    }

    /// The disk of a package the user chose (`--disk N`, 1-based), if any.
    pub fn package_disk(&self) -> Option<usize> {
        self.package_disk
    }

    /// Locks `path` as this context's images are locked (nothing without locks).
    pub fn lock(&self, path: &Path) -> Result<()> {
        self.locks.map_or(Ok(()), |l| l.lock(path))
    }

    /// True when the user allowed replaying a pending log into the image file.
    pub fn replay_log(&self) -> bool {
        self.replay_log
    }

    /// Opens the backing file `name` recorded in `referrer` (through the gate), or returns
    /// `None` when this context does not follow backing files.
    pub fn open_backing(
        &self,
        referrer: &dyn ByteSource,
        name: &str,
        format: Option<&str>,
    ) -> Result<Option<Box<dyn BlockRead>>> {
        if !self.follow_backing {
            return Ok(None);
        }
        self.open_referenced(referrer, name, format, "backing_file").map(Some)
    }

    /// Opens the file `name` that image `referrer` names in its field `field`, through
    /// the gate. `format` is the format recorded in the image, or `None` to probe. Only an
    /// image read from a file on disk can name other files: they are looked up beside it;
    /// or, for a source with a place of its own ([`ByteSource::open_relative`]: a remote
    /// image), there, with the same depth and loop checks as the gate's.
    pub fn open_referenced(
        &self,
        referrer: &dyn ByteSource,
        name: &str,
        format: Option<&str>,
        field: &'static str,
    ) -> Result<Box<dyn BlockRead>> {
        let Some(referrer_path) = referrer.file_path() else {
            let refuse = |why: String| Error::refused(why).with_field(field).with_file(referrer.name());
            if self.chain.len() >= crate::gate::MAX_CHAIN_DEPTH {
                return Err(refuse(format!(
                    "backing chain is deeper than {} images; refusing to open {name:?}",
                    crate::gate::MAX_CHAIN_DEPTH
                )));
            }
            let src = match referrer.open_relative(name) {
                Some(src) => src.map_err(|e| e.with_field(field).with_file(referrer.name()))?,
                None => return Err(refuse_referenced(referrer, "the file", name, field)),
            };
            let below = src.name().to_path_buf();
            if below == referrer.name() || self.chain.contains(&below) {
                return Err(refuse(format!("backing chain loops back to {}", below.display())));
            }
            let mut chain = self.chain.clone();
            chain.push(referrer.name().to_path_buf());
            return self.registry.open_source(src, format, &OpenContext { chain, ..*self });
        };
        let referrer = referrer_path;
        let path = self.gate.resolve(referrer, name, field, &self.chain)?;
        let mut chain = self.chain.clone();
        chain.push(referrer.canonicalize().map_err(|e| Error::io("cannot resolve path", e).with_file(referrer))?);
        let child = OpenContext { chain, ..*self };
        self.registry.open(&path, format, &child)
    }
}

/// The set of known drivers.
#[derive(Debug)]
pub struct Registry {
    drivers: Vec<Box<dyn Driver>>,
}

impl Registry {
    /// A registry of `drivers`; names must be unique.
    pub fn new(drivers: Vec<Box<dyn Driver>>) -> Self {
        Registry { drivers }
    }

    /// All drivers, in registration order.
    pub fn drivers(&self) -> impl Iterator<Item = &dyn Driver> {
        self.drivers.iter().map(|d| d.as_ref())
    }

    /// The driver called `name`.
    pub fn get(&self, name: &str) -> Result<&dyn Driver> {
        self.drivers().find(|d| d.name() == name || d.aliases().contains(&name)).ok_or_else(|| {
            let names: Vec<_> = self.drivers().map(|d| d.name()).collect();
            Error::argument(format!("unknown format {name:?} (known: {})", names.join(", ")))
        })
    }

    /// The formats that can be written to a stream, each with the options it needs
    /// (`raw`, `vmdk -o subformat=streamOptimized`).
    pub fn stream_formats(&self) -> Vec<String> {
        self.drivers()
            .filter_map(|d| match d.stream_options()? {
                "" => Some(d.name().to_string()),
                o => Some(format!("{} -o {o}", d.name())),
            })
            .collect()
    }

    /// Why `driver` cannot be written in place (`commit`, `convert -n`, `bench -w`): the
    /// formats that can ([`Driver::writes_in_place`] or [`Driver::edits_in_place`]).
    pub fn not_in_place(&self, driver: &dyn Driver) -> String {
        let can: Vec<_> =
            self.drivers().filter(|d| d.writes_in_place() || d.edits_in_place()).map(|d| d.name()).collect();
        format!("diskcast writes {} images in place, not {} images", can.join(", "), driver.name())
    }

    /// Finds the format of the file at `path` by magic (see [`probe_source`](Self::probe_source)).
    pub fn probe(&self, path: &Path) -> Result<&dyn Driver> {
        self.probe_source(&ImageFile::open(path)?)
    }

    /// Finds the format of `file` by magic. A source no driver claims is raw only when it
    /// plainly is one (see [`looks_raw`]); when several drivers claim it, that is an error
    /// rather than a guess.
    pub fn probe_source(&self, file: &dyn ByteSource) -> Result<&dyn Driver> {
        let path = file.name();
        let file_len = file.len()?;
        let head_len = file_len.min(u64_from_usize(PROBE_HEAD));
        let mut head = vec![0u8; usize::try_from(head_len).unwrap_or(PROBE_HEAD)];
        file.read_exact_at(&mut head, 0)?;
        let tail_len = file_len.min(u64_from_usize(PROBE_TAIL));
        let mut tail = vec![0u8; usize::try_from(tail_len).unwrap_or(PROBE_TAIL)];
        file.read_exact_at(&mut tail, file_len - tail_len)?;
        let data = ProbeData { head: &head, tail: &tail, file_len };
        let matches: Vec<&dyn Driver> = self.drivers().filter(|d| d.probe(&data)).collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] if looks_raw(&data) || has_raw_extension(path) => self.get("raw"),
            [] => Err(Error::invalid(
                "cannot tell the image format: no known magic, and neither its content (no partition \
                 table or filesystem signature) nor its name (.raw, .img, ...) says raw disk; \
                 pass -f raw if it is one",
            )
            .with_file(path)),
            many => {
                let names: Vec<_> = many.iter().map(|d| d.name()).collect();
                Err(Error::invalid(format!(
                    "the file matches several formats ({}); pass -f to choose",
                    names.join(", ")
                ))
                .with_file(path))
            }
        }
    }

    /// Opens the file at `path` as `format`, or as the probed format when `format` is `None`.
    pub fn open(&self, path: &Path, format: Option<&str>, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        ctx.lock(path)?;
        self.open_source(open_file(path)?, format, ctx)
    }

    /// Opens the image held in `src` as `format`, or as the probed format when `format` is
    /// `None`. Only [`open`](Self::open) locks: a source that is not a path is the
    /// caller's to lock (the file it lies in, say).
    pub fn open_source(&self, src: Source, format: Option<&str>, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        let driver = match format {
            Some(name) => self.get(name)?,
            None => self.probe_source(src.as_ref())?,
        };
        let name = src.name().to_path_buf();
        driver.open(src, ctx).file(name)
    }
}

/// File name endings that say "raw disk" when no magic says otherwise. Only consulted
/// after every driver declined the file, so a raw disk whose guest wrote a qcow2 header
/// at offset 0 is still never taken for qcow2 by its name.
const RAW_EXTENSIONS: &[&str] = &["raw", "img", "bin", "dd", "iso"];

fn has_raw_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| RAW_EXTENSIONS.iter().any(|r| r.eq_ignore_ascii_case(e)))
}

/// True when a file no driver claims is plainly a raw disk: empty, blank at the start,
/// or carrying a partition table or a well-known filesystem signature.
pub fn looks_raw(data: &ProbeData<'_>) -> bool {
    let h = data.head;
    let at = |off: usize, magic: &[u8]| h.get(off..off + magic.len()) == Some(magic);
    data.file_len == 0
        || crate::io::is_zero(h)
        || at(510, &[0x55, 0xaa]) // MBR or protective MBR, FAT/NTFS boot sector
        || at(512, b"EFI PART") // GPT header at LBA 1
        || at(0x8001, b"CD001") // ISO 9660 primary volume descriptor
        || at(0x438, &[0x53, 0xef]) // ext2/3/4 superblock magic
        || at(0, b"XFSB")
        || at(0, b"hsqs") // squashfs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A driver that claims files starting with its magic (none if empty) and opens nothing.
    struct Fake(&'static str, &'static [u8]);

    impl Driver for Fake {
        fn name(&self) -> &'static str {
            self.0
        }
        fn probe(&self, data: &ProbeData<'_>) -> bool {
            !self.1.is_empty() && data.head.starts_with(self.1)
        }
        fn open(&self, _: Source, _: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
            Err(Error::unsupported("fake"))
        }
        fn create(&self, _: &Path, _: u64, _: &CreateOptions, _: &OutputFiles) -> Result<Box<dyn BlockWrite>> {
            Err(Error::unsupported("fake"))
        }
        fn measure(&self, _: u64, _: &[Extent], _: &CreateOptions) -> Result<Measure> {
            Err(Error::unsupported("fake"))
        }
    }

    fn registry() -> Registry {
        Registry::new(vec![Box::new(Fake("raw", b"")), Box::new(Fake("one", b"MAGIC")), Box::new(Fake("two", b"MAG"))])
    }

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn units_touched_counts_each_unit_once() {
        let e = |offset, len, alloc| Extent { offset, len, alloc };
        let data = [
            e(100, 10, Alloc::Data),    // unit 1 (of 64 bytes)
            e(0, 10, Alloc::Data),      // unit 0, out of order
            e(120, 20, Alloc::Backing), // units 1..2, unit 1 already counted
            e(200, 50, Alloc::Zero),    // not data
            e(250, 100, Alloc::Data),   // units 3..4, clipped at the 300-byte end
        ];
        assert_eq!(units_touched(&data, 300, 64), 5);
        assert_eq!(units_touched(&[], 300, 64), 0);
    }

    #[test]
    fn two_claims_are_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry();
        let e = r.probe(&file(dir.path(), "x", b"MAGIC and more")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidFormat);
        assert!(e.to_string().contains("several formats (one, two)"), "{e}");
        assert_eq!(r.probe(&file(dir.path(), "y", b"MAGxx")).unwrap().name(), "two");
    }

    #[test]
    fn unclaimed_files_are_raw_only_when_plainly_raw() {
        let dir = tempfile::tempdir().unwrap();
        let noise = b"\x13\x37 no magic, no partition table";
        let r = registry();
        let e = r.probe(&file(dir.path(), "noise", noise)).unwrap_err();
        assert!(e.to_string().contains("pass -f raw"), "{e}");
        assert_eq!(r.probe(&file(dir.path(), "noise.img", noise)).unwrap().name(), "raw");
        assert_eq!(r.probe(&file(dir.path(), "empty", b"")).unwrap().name(), "raw");
        let mut mbr = vec![0x33u8; 1024];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(r.probe(&file(dir.path(), "disk", &mbr)).unwrap().name(), "raw");
    }
}
