//! VirtualBox VDI driver for diskcast. The format is described by VirtualBox's
//! `src/VBox/Storage/VDICore.h` (<https://www.virtualbox.org/browser/vbox/trunk/src/VBox/Storage/VDICore.h>)
//! and, as qemu reads it, by qemu's `block/vdi.c`.
//!
//! - Reading: VDI 1.1 static ("fixed") and dynamic ("normal") images, any power-of-two
//!   block size from 512 B to 256 MiB, free (`0xffffffff`) and zero (`0xfffffffe`) block
//!   map entries. Undo and differencing images, version 0 headers and blocks with extra
//!   data are refused as unsupported.
//! - Writing: dynamic (default) or static (`-o static=on`) images with 1 MiB blocks,
//!   laid out as qemu lays them out, from many threads at once.
//! - Editing in place (`commit`, `convert -n`, `bench -w`): [`edit`], blocks allocated on
//!   first write, the block map written last.
//! - `check`: qemu-img check's block map checks, counted the same way.
//! - `measure`: file size arithmetic (qemu-img cannot measure vdi).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod check;
pub mod edit;
pub mod header;
pub mod reader;
pub mod writer;

use diskcast_block::io::ImageFile;
use diskcast_block::registry::units_touched;
use diskcast_block::registry::{CreateOptions, Driver, Measure, OpenContext, OptionSpec, ProbeData};
use diskcast_block::source::Source;
use diskcast_block::unit_edit::{self, UnitEditor};
use diskcast_block::{BlockRead, BlockWrite, Extent, Result};

pub use reader::VdiReader;
pub use writer::VdiWriter;

/// The VirtualBox VDI format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VdiDriver;

/// `-o` options accepted by `create`, as qemu-img names them.
const OPTIONS: &[OptionSpec] =
    &[OptionSpec { name: "static", help: "on: preallocated (fixed) image; off: dynamic image (default)" }];

impl Driver for VdiDriver {
    fn name(&self) -> &'static str {
        "vdi"
    }

    fn probe(&self, data: &ProbeData<'_>) -> bool {
        header::probe(data.head)
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Ok(Box::new(VdiReader::open(src)?))
    }

    diskcast_block::driver_methods! { options: OPTIONS, params: writer::Params::from_options,
    create: VdiWriter::new, check: check::check }

    fn edits_in_place(&self) -> bool {
        true
    }

    /// `commit`, `convert -n`: into the existing image's blocks ([`edit`]).
    fn write_into(&self, file: ImageFile, size: u64, opts: &CreateOptions) -> Result<Box<dyn BlockWrite>> {
        unit_edit::write_into(self.name(), file, size, opts, |file, size, zero| {
            Ok(Box::new(UnitEditor::new(edit::VdiMap::open(file)?, size, zero, "vdi (written in place)")?))
        })
    }

    /// The file our writer makes: header and block map, plus one whole block for every
    /// block a data extent touches (every block for static images).
    fn measure(&self, size: u64, data: &[Extent], opts: &CreateOptions) -> Result<Measure> {
        let p = opts.params(self, size, writer::Params::from_options)?;
        let bs = writer::BLOCK_SIZE;
        let fully = p.offset_data() + p.blocks() * bs;
        if p.is_static {
            return Ok(Measure { required: fully, fully_allocated: fully });
        }
        let blocks = units_touched(data, p.size, bs);
        Ok(Measure { required: p.offset_data() + blocks * bs, fully_allocated: fully })
    }
}
