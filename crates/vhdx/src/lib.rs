//! Microsoft VHDX driver for diskcast, following [MS-VHDX] v1.0
//! (<https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/83e061f8-f6e2-4de1-91bd-5d518a43d477>).
//!
//! - Reading: dynamic, fixed and differencing images; headers and region tables are
//!   CRC-32C checked (the valid header with the highest sequence number wins), metadata
//!   and every BAT entry are validated against the file. A pending log is replayed only
//!   when the user allows writing to the image (`--replay-log`), otherwise refused.
//! - Writing: dynamic (default) or fixed, 512 or 4096-byte logical sectors, with qemu-img's
//!   option names; payload blocks are allocated on first write, metadata written by `finish`.
//! - `check`: pending log, BAT entries past the end of the file, overlapping blocks.
//! - `measure`: our own arithmetic (qemu-img cannot measure VHDX).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod check;
pub mod edit;
pub mod format;
pub mod layout;
pub mod log;
pub mod reader;
pub mod writer;

use diskcast_block::registry::{CreateOptions, Driver, Measure, OpenContext, OptionSpec, ProbeData};
use diskcast_block::source::Source;
use diskcast_block::{BlockRead, Extent, Result};

pub use reader::VhdxReader;
pub use writer::VhdxWriter;

/// The Microsoft VHDX format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VhdxDriver;

/// `-o` options accepted by `create`, as qemu-img names them (plus `logical_sector_size`).
const OPTIONS: &[OptionSpec] = &[
    OptionSpec { name: "subformat", help: "dynamic (default) or fixed" },
    OptionSpec { name: "block_size", help: "payload block size, a power of two from 1M to 256M (default: as qemu)" },
    OptionSpec { name: "log_size", help: "log size, a multiple of 1M (default 1M)" },
    OptionSpec { name: "block_state_zero", help: "on: mark blocks without data ZERO instead of NOT_PRESENT (dynamic)" },
    OptionSpec { name: "logical_sector_size", help: "512 (default) or 4096" },
];

impl Driver for VhdxDriver {
    fn name(&self) -> &'static str {
        "vhdx"
    }

    fn edits_in_place(&self) -> bool {
        true
    }

    /// `commit`, `convert -n`: into the existing image's blocks, its BAT changed through
    /// the log ([`edit`]).
    fn write_into(
        &self,
        file: diskcast_block::io::ImageFile,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<Box<dyn diskcast_block::BlockWrite>> {
        diskcast_block::unit_edit::write_into(self.name(), file, size, opts, edit::editor)
    }

    fn probe(&self, data: &ProbeData<'_>) -> bool {
        data.head.starts_with(format::FILE_SIGNATURE)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Ok(Box::new(VhdxReader::open(src, ctx)?))
    }

    diskcast_block::driver_methods! { options: OPTIONS, params: writer::Params::from_options,
    create: VhdxWriter::new, check: check::check }

    fn measure(&self, size: u64, data: &[Extent], opts: &CreateOptions) -> Result<Measure> {
        let params = opts.params(self, size, writer::Params::from_options)?;
        writer::measure(&params, data)
    }
}
