//! VMware VMDK driver for diskcast, following VMware's "Virtual Disk Format 5.0"
//! specification (<https://web.archive.org/web/2020/https://www.vmware.com/support/developer/vddk/vmdk_50_technote.pdf>).
//!
//! - Reading: monolithicSparse and streamOptimized (hosted sparse extents, "KDMV", with
//!   their embedded descriptor; compressed grains with markers; the footer of
//!   GD_AT_END streams), text descriptors with SPARSE, FLAT, VMFS and ZERO extents
//!   (monolithicFlat, twoGbMaxExtentSparse/Flat, ESXi vmfs/vmfsThin). Extent files are
//!   opened only through the gate's `resolve_extent`. Delta disks are refused.
//! - Writing: monolithicSparse (qemu's layout, parallel), streamOptimized (sequential,
//!   parallel compression, never seeks: [`stream_optimized_to`] writes to a pipe) and
//!   monolithicFlat (descriptor + `<stem>-flat.vmdk`).
//! - Editing in place (`commit`, `convert -n`, `bench -w`): [`edit`], monolithicSparse
//!   grains added at the end (tables written last), monolithicFlat written where it lies.
//! - `check`: every grain table and grain lies inside its file; compressed grain markers.
//! - `measure`: arithmetic for the uncompressed layouts, an upper bound for streams.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod check;
pub mod descriptor;
pub mod edit;
pub mod header;
pub mod reader;
pub mod sparse;
pub mod stream;
pub mod writer;

use diskcast_block::io::ImageFile;
use diskcast_block::output::OutputFiles;
use diskcast_block::registry::units_touched;
use diskcast_block::registry::{
    CheckReport, CreateOptions, Driver, Measure, OpenContext, OptionSpec, ProbeData, check_named,
};
use diskcast_block::source::Source;
use diskcast_block::{BlockRead, BlockWrite, Error, Extent, Result};
use diskcast_layout::u64_from_usize;
use header::SECTOR;
use std::path::Path;
use writer::{FlatWriter, GRAIN_SECTORS, Params, SparseWriter, Subformat};

pub use reader::VmdkReader;
pub use stream::StreamWriter;

/// The VMware VMDK format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmdkDriver;

/// `-o` options accepted by `create`, as qemu-img names them.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "subformat",
        help: "monolithicSparse (default), streamOptimized or monolithicFlat (twoGbMaxExtent* are read only)",
    },
    OptionSpec { name: "adapter_type", help: "ide (default), lsilogic, buslogic or legacyESX" },
    OptionSpec { name: "hwversion", help: "virtual hardware version written as ddb.virtualHWVersion (default 4)" },
    OptionSpec { name: "zeroed_grain", help: "on/off (default off): mark zero grains in grain tables" },
];

/// Writes a streamOptimized image of `size` bytes to `out` without seeking (a pipe is
/// fine): the header says the grain directory is at the end, the footer says where.
/// Drive it with the copy engine (it wants [`diskcast_block::WriteOrder::Sequential`]);
/// `finish` writes the metadata and flushes `out`.
pub fn stream_optimized_to(
    out: Box<dyn std::io::Write + Send>,
    size: u64,
    opts: &CreateOptions,
) -> Result<Box<dyn BlockWrite>> {
    opts.check_keys(&VmdkDriver)?;
    let mut o = opts.clone();
    match o.options.get("subformat").map(String::as_str) {
        None | Some("streamOptimized") => {}
        Some(v) => return Err(Error::argument(format!("subformat={v}: a pipe can only take streamOptimized"))),
    }
    o.options.insert("subformat".into(), "streamOptimized".into());
    let p = Params::from_options(size, &o)?;
    Ok(Box::new(StreamWriter::new(out, p, "stream.vmdk")?))
}

/// True when `head` (the start of a small file) is a VMDK text descriptor: it starts
/// with the descriptor banner, or the whole file is printable text with a `createType=`
/// line and at least one extent line.
fn looks_like_descriptor(data: &ProbeData<'_>) -> bool {
    if data.head.starts_with(b"# Disk DescriptorFile") {
        return true;
    }
    if data.file_len > u64_from_usize(data.head.len()) || data.head.len() < 20 {
        return false;
    }
    let end = data.head.iter().position(|&c| c == 0).unwrap_or(data.head.len());
    if data.head[end..].iter().any(|&c| c != 0) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(&data.head[..end]) else { return false };
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return false;
    }
    let mut create_type = false;
    let mut extent = false;
    for line in text.lines().map(str::trim) {
        let key = line.split('=').next().unwrap_or("").trim();
        create_type |= line.contains('=') && key.eq_ignore_ascii_case("createType");
        let first = line.split_whitespace().next().unwrap_or("");
        extent |= matches!(first, "RW" | "RDONLY" | "NOACCESS") && line.contains('"') || line.ends_with(" ZERO");
    }
    create_type && extent
}

impl Driver for VmdkDriver {
    fn name(&self) -> &'static str {
        "vmdk"
    }

    fn probe(&self, data: &ProbeData<'_>) -> bool {
        data.head.starts_with(&header::MAGIC) || looks_like_descriptor(data)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Ok(Box::new(VmdkReader::open(src, ctx)?))
    }

    diskcast_block::driver_methods! { options: OPTIONS, params: Params::from_options }

    /// Only streamOptimized is written strictly in order; it must be asked for by name,
    /// since a plain `-O vmdk` means monolithicSparse everywhere else.
    fn check_stream(&self, opts: &CreateOptions) -> Result<()> {
        self.validate(opts)?;
        match opts.options.get("subformat") {
            Some(s) if s == "streamOptimized" => Ok(()),
            _ => Err(Error::argument(
                "vmdk can be written to standard output or a pipe only as -o subformat=streamOptimized (the other subformats seek back)",
            )),
        }
    }

    fn stream_options(&self) -> Option<&'static str> {
        Some("subformat=streamOptimized")
    }

    fn create_stream(
        &self,
        out: Box<dyn std::io::Write + Send>,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<Box<dyn BlockWrite>> {
        self.check_stream(opts)?;
        stream_optimized_to(out, size, opts)
    }

    fn create(&self, path: &Path, size: u64, opts: &CreateOptions, out: &OutputFiles) -> Result<Box<dyn BlockWrite>> {
        let p = opts.params(self, size, Params::from_options)?;
        match p.subformat {
            Subformat::MonolithicSparse => {
                let file = out.create(path)?;
                Ok(Box::new(SparseWriter::new(file, path, p)?))
            }
            Subformat::StreamOptimized => {
                let name = writer::file_name(path)?;
                let file = out.create(path)?;
                let sink = stream::FileSink { file, pos: 0 };
                Ok(Box::new(StreamWriter::new(Box::new(sink), p, &name)?))
            }
            Subformat::MonolithicFlat => Ok(Box::new(FlatWriter::new(path, p, out)?)),
        }
    }

    fn edits_in_place(&self) -> bool {
        true
    }

    /// `commit`, `convert -n`: into the existing monolithicSparse or monolithicFlat disk
    /// ([`edit`]).
    fn write_into(&self, file: ImageFile, size: u64, opts: &CreateOptions) -> Result<Box<dyn BlockWrite>> {
        diskcast_block::unit_edit::write_into(self.name(), file, size, opts, edit::editor)
    }

    fn check(&self, src: Source, ctx: &OpenContext<'_>) -> Result<CheckReport> {
        check_named(src, |src| check::check(src, ctx))
    }

    fn measure(&self, size: u64, data: &[Extent], opts: &CreateOptions) -> Result<Measure> {
        let p = opts.params(self, size, Params::from_options)?;
        let grain = GRAIN_SECTORS * SECTOR;
        let all_grains = p.size.div_ceil(grain);
        let used = units_touched(data, p.size, grain);
        let gt_count = all_grains.div_ceil(writer::GTES_PER_GT);
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        match p.subformat {
            Subformat::MonolithicFlat => Ok(Measure { required: p.size, fully_allocated: p.size }),
            Subformat::MonolithicSparse => {
                let meta = 1 + writer::DESC_SECTORS + 2 * (gd_sectors + gt_count * 4);
                let overhead = meta.next_multiple_of(GRAIN_SECTORS) * SECTOR;
                Ok(Measure { required: overhead + used * grain, fully_allocated: overhead + all_grains * grain })
            }
            Subformat::StreamOptimized => {
                // An upper bound: every grain stored (level-0 zlib at worst) with its
                // marker, every table, the directory, footer and end marker.
                let per_grain = (12 + grain + 64).next_multiple_of(SECTOR);
                let meta = |grains: u64| {
                    let tables = grains.div_ceil(writer::GTES_PER_GT).min(gt_count);
                    (GRAIN_SECTORS + tables * 5 + 1 + gd_sectors + 3) * SECTOR
                };
                Ok(Measure {
                    required: meta(used) + used * per_grain,
                    fully_allocated: meta(all_grains) + all_grains * per_grain,
                })
            }
        }
    }
}
