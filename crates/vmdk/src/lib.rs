//! VMware VMDK driver for diskcast. Work in progress: every operation is refused until
//! the reader and writer land.
#![forbid(unsafe_code)]

use diskcast_block::output::OutputFiles;
use diskcast_block::registry::{CreateOptions, Driver, Measure, OpenContext, ProbeData};
use diskcast_block::{BlockRead, BlockWrite, Error, Extent, Result};
use std::path::Path;

/// The VMware VMDK format driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmdkDriver;

impl Driver for VmdkDriver {
    fn name(&self) -> &'static str {
        "vmdk"
    }

    fn probe(&self, _data: &ProbeData<'_>) -> bool {
        false
    }

    fn open(&self, path: &Path, _ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Err(Error::unsupported("vmdk is not implemented yet").with_file(path))
    }

    fn create(
        &self,
        path: &Path,
        _size: u64,
        _opts: &CreateOptions,
        _out: &OutputFiles,
    ) -> Result<Box<dyn BlockWrite>> {
        Err(Error::unsupported("vmdk is not implemented yet").with_file(path))
    }

    fn measure(&self, _size: u64, _data: &[Extent], _opts: &CreateOptions) -> Result<Measure> {
        Err(Error::unsupported("vmdk is not implemented yet"))
    }
}
