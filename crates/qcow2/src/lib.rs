//! qcow2 driver for diskcast, following the specification at
//! <https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt>.
//!
//! - Reading (v2 and v3): cluster sizes 512 B..2 MiB, zero clusters, compressed clusters
//!   (zlib and zstd), extended L2 entries (subclusters), backing files opened only through
//!   the block layer's gate. Encryption, external data files and unknown incompatible
//!   features are refused; images marked corrupt are refused until checked.
//! - Writing: v3 (default) or v2, any cluster size, optional zlib/zstd compression,
//!   backing file name and format, refcount widths 1..64 bits. Data goes first, metadata
//!   (L2, L1, refcounts) is written by `finish`, with exact refcounts.
//! - `check`: recomputes every refcount from L1/L2 tables (and snapshots) and persistent
//!   bitmaps, and compares.
//! - `bitmap_edit`: persistent dirty bitmaps added, removed, cleared, enabled, disabled.
//! - `amend`: compat, refcount_bits, lazy_refcounts and size changed in place.
//! - `repair`: `check -r leaks|all`, in place, as qemu-img check -r repairs.
//! - `measure`: qemu-img measure's arithmetic.
//! - `resize`: in place, growing or (`--shrink`) shrinking, as qemu-img resize does.
//! - `backing`: the backing file changed in place (`rebase`), an overlay emptied after
//!   `commit`.
//! - `edit`: an existing image changed in place (`convert -n`, snapshots): the one
//!   cluster allocator, copy-on-write, zero clusters, crash-safe write order.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod amend;
pub mod backing;
pub mod bitmap;
pub mod bitmap_edit;
pub mod check;
pub mod edit;
pub mod header;
pub mod measure;
pub mod reader;
pub mod repair;
pub mod resize;
pub mod snapshot;
pub mod writer;

use diskcast_block::io::ImageFile;
use diskcast_block::registry::{
    CheckReport, CreateOptions, Driver, Measure, OpenContext, OptionSpec, Preallocation, ProbeData, Repair, SnapshotOp,
    SnapshotRef,
};
use diskcast_block::source::Source;
use diskcast_block::{BlockRead, BlockWrite, Error, Extent, PersistentBitmap, Result, SnapshotInfo};

pub use reader::Qcow2Reader;
pub use writer::Qcow2Writer;

/// The qcow2 format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Qcow2Driver;

/// `-o` options accepted by `create`, as qemu-img names them.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "compat", help: "qcow2 version: 1.1/v3 (default) or 0.10/v2" },
    OptionSpec { name: "cluster_size", help: "cluster size, a power of two from 512 to 2M (default 64K)" },
    OptionSpec { name: "compression_type", help: "zlib (default) or zstd (needs compat=1.1)" },
    OptionSpec { name: "backing_file", help: "backing file name to record" },
    OptionSpec { name: "backing_fmt", help: "format of the backing file to record" },
    OptionSpec { name: "refcount_bits", help: "refcount width: 1, 2, 4, 8, 16 (default), 32 or 64" },
    OptionSpec { name: "extended_l2", help: "off only: writing extended L2 entries is not implemented" },
    OptionSpec {
        name: "preallocation",
        help: "off (default); metadata: every cluster allocated in qemu's layout, data left sparse; \
               falloc: also reserved; full: also written with zeros",
    },
];

impl Driver for Qcow2Driver {
    fn name(&self) -> &'static str {
        "qcow2"
    }

    fn probe(&self, data: &ProbeData<'_>) -> bool {
        data.head.starts_with(&header::MAGIC)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Ok(Box::new(Qcow2Reader::open(src, ctx)?))
    }

    diskcast_block::driver_methods! { options: OPTIONS, params: writer::Params::from_options,
    create: Qcow2Writer::new, check: check::check }

    fn bitmap(&self, file: &ImageFile, ops: &[diskcast_block::registry::BitmapOp]) -> Result<()> {
        bitmap_edit::edit(file, ops)
    }

    fn amend(&self, file: &ImageFile, opts: &std::collections::BTreeMap<String, String>) -> Result<()> {
        amend::amend(file, opts)
    }

    fn repair(&self, file: &ImageFile, fix: Repair) -> Result<CheckReport> {
        repair::repair(file, fix)
    }

    fn edits_in_place(&self) -> bool {
        true
    }

    /// `convert -n`: into the existing image's clusters (its snapshots, backing file and
    /// format options stay; `-o` and `-c` cannot change them and are refused).
    fn write_into(&self, file: ImageFile, size: u64, opts: &CreateOptions) -> Result<Box<dyn BlockWrite>> {
        let name = file.path().to_path_buf();
        if !opts.options.is_empty() || opts.backing_file.is_some() {
            return Err(Error::argument(
                "-n writes into the existing qcow2 image as it is: -o and -B cannot change its format; \
                 use qemu-img amend for its options, or convert without -n",
            )
            .with_file(&name));
        }
        let writer = edit::EditWriter::new(file, size, opts.target_is_zero).map_err(|e| e.with_file(&name))?;
        // -c (convert -n -c, rebase -c): clusters compressed in the image's own type, as qemu-img.
        Ok(Box::new(if opts.compress { writer.compressed() } else { writer }))
    }

    fn snapshots(&self, src: Source) -> Result<Vec<SnapshotInfo>> {
        let h = header::Header::read(src.as_ref()).map_err(|e| e.with_file(src.name()))?;
        h.check_supported().map_err(|e| e.with_file(src.name()))?;
        let table = snapshot::read_table(src.as_ref(), &h).map_err(|e| e.with_file(src.name()))?;
        Ok(table.iter().map(snapshot::Snapshot::info).collect())
    }

    fn snapshot(&self, file: &ImageFile, op: &SnapshotOp) -> Result<Option<SnapshotInfo>> {
        let name = file.path().to_path_buf();
        let run = || -> Result<Option<SnapshotInfo>> {
            let mut ed = edit::Editor::open(file)?;
            match op {
                SnapshotOp::Create(n) => return snapshot::create(&mut ed, n).map(Some),
                SnapshotOp::Apply(k) => snapshot::apply(&mut ed, k)?,
                SnapshotOp::Delete(n) => snapshot::delete(&mut ed, n)?,
            }
            Ok(None)
        };
        run().map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
    }

    fn open_snapshot(&self, src: Source, ctx: &OpenContext<'_>, which: &SnapshotRef) -> Result<Box<dyn BlockRead>> {
        let name = src.name().to_path_buf();
        let r = Qcow2Reader::open(src, ctx)?.at_snapshot(which).map_err(|e| e.with_file(&name))?;
        Ok(Box::new(r))
    }

    fn resize(&self, file: &ImageFile, size: u64, prealloc: Preallocation) -> Result<()> {
        resize::resize(file, size, prealloc)
    }

    fn sets_backing(&self) -> bool {
        true
    }

    fn set_backing(&self, file: &ImageFile, backing: Option<(&str, &str)>) -> Result<()> {
        backing::set_backing(file, backing)
    }

    fn empty_refusal(&self, file: &ImageFile) -> Result<Option<String>> {
        backing::cannot_empty(file)
    }

    fn make_empty(&self, file: &ImageFile) -> Result<bool> {
        backing::make_empty(file).map(|()| true)
    }

    fn measure(&self, size: u64, data: &[Extent], opts: &CreateOptions) -> Result<Measure> {
        let params = opts.params(self, size, writer::Params::from_options)?;
        measure::measure(&params, data)
    }

    fn measure_bitmaps(&self, size: u64, bitmaps: &[PersistentBitmap], opts: &CreateOptions) -> Result<Option<u64>> {
        let params = opts.params(self, size, writer::Params::from_options)?;
        Ok((params.version >= 3).then(|| measure::bitmaps(&params, bitmaps)))
    }
}
