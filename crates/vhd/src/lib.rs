//! Microsoft VHD driver for diskcast (qemu calls the format `vpc`), following the
//! "Virtual Hard Disk Image Format Specification" v1.0
//! (<https://www.microsoft.com/en-us/download/details.aspx?id=23850>), with qemu's
//! `block/vpc.c` as the reference for how images are sized.
//!
//! - Reading: fixed, dynamic and differencing disks (parents opened only through the
//!   block layer's gate, their unique id checked). Footer and dynamic header checksums
//!   are verified; the BAT is validated against the file before use. The old 511-byte
//!   footer is accepted.
//! - Writing: dynamic (default, parallel writers, 2 MiB blocks) and fixed, with qemu-img's
//!   `subformat` and `force_size` options and our `round_size`.
//! - Editing in place (`commit`, `convert -n`, `bench -w`): [`edit`], fixed disks written
//!   where their bytes are, dynamic ones' blocks added at the end, the BAT written last.
//! - `check`: our own (footer copies, BAT entries inside the file, no overlapping blocks).
//! - `measure`: our own arithmetic for our layout (qemu-img cannot measure vpc).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod check;
pub mod edit;
pub mod format;
pub mod reader;
pub mod writer;

use diskcast_block::io::ImageFile;
use diskcast_block::registry::units_touched;
use diskcast_block::registry::{CreateOptions, Driver, Measure, OpenContext, OptionSpec, ProbeData};
use diskcast_block::source::Source;
use diskcast_block::{BlockRead, BlockWrite, Extent, Result};
use diskcast_layout::u64_from_usize;
use format::{FOOTER_SIZE, Footer, OLD_FOOTER_SIZE, TYPE_FIXED};

pub use reader::VhdReader;
pub use writer::VhdWriter;
use writer::{BLOCK_SIZE, Params, Subformat};

/// The Microsoft VHD format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhdDriver;

/// `-o` options accepted by `create`: qemu-img's, plus `round_size`.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "subformat", help: "dynamic (default) or fixed" },
    OptionSpec {
        name: "force_size",
        help: "on: keep the size exactly (current_size is authoritative) instead of rounding it up to a CHS geometry",
    },
    OptionSpec {
        name: "round_size",
        help: "round the virtual size up to a multiple of this (e.g. 1M for Azure); the tail reads as zeros",
    },
];

impl Driver for VhdDriver {
    fn name(&self) -> &'static str {
        "vhd"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["vpc"]
    }

    /// Dynamic and differencing disks start with a copy of the footer; fixed disks have
    /// it only in their last 512 (or, from old Virtual PC, 511) bytes. A tail footer is
    /// claimed only when its checksum is right and it says "fixed", so that a raw disk
    /// that merely ends in the cookie is not taken for a VHD.
    fn probe(&self, data: &ProbeData<'_>) -> bool {
        if Footer::has_cookie(data.head) {
            return true;
        }
        let tail = data.tail;
        let n = u64_from_usize(tail.len());
        let candidates: [(Option<&[u8]>, u64); 2] =
            [(n.eq(&FOOTER_SIZE).then_some(tail), FOOTER_SIZE), (tail.get(1..), OLD_FOOTER_SIZE)];
        candidates.into_iter().any(|(buf, len)| {
            buf.filter(|b| Footer::has_cookie(b) && u64_from_usize(b.len()) == len).is_some_and(|b| {
                Footer::parse(b, 0).is_ok_and(|f| {
                    f.disk_type == TYPE_FIXED && f.virtual_size().is_ok_and(|s| s <= data.file_len.saturating_sub(len))
                })
            })
        })
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Ok(Box::new(VhdReader::open(src, ctx)?))
    }

    // `check`: our own consistency check (qemu-img has none for vpc), see [`check`].
    diskcast_block::driver_methods! { options: OPTIONS, params: Params::from_options,
    create: VhdWriter::new, check: check::check }

    fn edits_in_place(&self) -> bool {
        true
    }

    /// `commit`, `convert -n`: into the existing disk ([`edit`]).
    fn write_into(&self, file: ImageFile, size: u64, opts: &CreateOptions) -> Result<Box<dyn BlockWrite>> {
        diskcast_block::unit_edit::write_into(self.name(), file, size, opts, edit::editor)
    }

    /// Fixed: the disk plus its footer either way. Dynamic: the blocks that data extents
    /// touch, laid out as our writer lays them out.
    fn measure(&self, size: u64, data: &[Extent], opts: &CreateOptions) -> Result<Measure> {
        let p = opts.params(self, size, Params::from_options)?;
        if p.subformat == Subformat::Fixed {
            let n = p.size + FOOTER_SIZE;
            return Ok(Measure { required: n, fully_allocated: n });
        }
        let blocks = units_touched(data, p.size, BLOCK_SIZE);
        Ok(Measure { required: p.dynamic_file_len(blocks), fully_allocated: p.dynamic_file_len(p.bat_entries()) })
    }
}
