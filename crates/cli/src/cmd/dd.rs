//! `diskcast dd`: part of an image copied into a new image, with qemu-img dd's operands
//! (`if=`, `of=`, `bs=`, `count=`, `skip=`) and its arithmetic: the output holds
//! `min(count*bs, size) - skip*bs` bytes of the input from `skip*bs` on (none, with a
//! warning, when skip is past that), is created like `convert` creates its target (through
//! the one output path), and its size is rounded up to 512 bytes as qemu-img creates
//! images, the rounding reading as zeros.

use crate::common::args::{OpenArgs, WriteArgs};
use crate::common::output::ImageWriter;
use crate::common::{Images, create_options, image_and_format};
use clap::Args;
use diskcast_block::size::parse_size;
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result, range_end};
use diskcast_layout::u64_from_usize;
use diskcast_part::PartitionView;
use std::path::PathBuf;
use std::sync::Arc;

/// qemu-img dd's largest block size (it keeps `bs` in an int).
const MAX_BS: u64 = 2_147_483_647;
/// qemu-img dd's largest count and skip (int64).
const MAX_COUNT: u64 = 9_223_372_036_854_775_807;
/// qemu-img creates images in whole 512-byte sectors.
const SECTOR: u64 = 512;

pub fn run(a: DdArgs) -> Result<u8> {
    let op = Operands::parse(&a.operands)?;
    let (input, format) = image_and_format(&op.input, a.image_opts, a.format.as_ref())?;
    let images = Images::new(&a.open)?;
    let registry = &images.registry;
    if let Some(f) = &format {
        registry.get(f)?;
    }
    let create = create_options(&[], false)?;
    let write = WriteArgs::default();
    // The target is checked and locked before the input is read, as in every writing command.
    let writer = ImageWriter::open(&op.output, &[&input], &a.output_format, create, &write)?;
    let src: Arc<dyn BlockRead> = Arc::from(images.open(&input, format.as_deref())?);
    images.refuse_unused_disk_choice(&[(&input, &src.info().format)])?;
    let mut size = src.size();
    if let Some(count) = op.count
        && let Some(bytes) = count.checked_mul(op.bs)
        && bytes < size
    {
        size = bytes;
    }
    let skip = op.skip.unwrap_or(0).checked_mul(op.bs).filter(|&s| s <= size);
    let start = match skip {
        Some(s) => s,
        None => {
            eprintln!("diskcast: {}: cannot skip to specified offset (the output is empty)", input.display());
            size
        }
    };
    let data = PartitionView::new(src, start, size - start, "dd")?;
    let padded = Padded { len: (size - start).div_ceil(SECTOR) * SECTOR, data };
    writer.write(&padded)?;
    Ok(0)
}

/// The operands, checked as qemu-img dd checks them; a repeated operand's last value wins.
#[derive(Debug)]
struct Operands {
    input: PathBuf,
    output: PathBuf,
    bs: u64,
    count: Option<u64>,
    skip: Option<u64>,
}

impl Operands {
    fn parse(args: &[String]) -> Result<Self> {
        let (mut input, mut output, mut bs, mut count, mut skip) = (None, None, 512, None, None);
        for arg in args {
            let (key, value) =
                arg.split_once('=').ok_or_else(|| Error::argument(format!("unrecognized operand {arg}")))?;
            match key {
                "if" => input = Some(PathBuf::from(value)),
                "of" => output = Some(PathBuf::from(value)),
                "bs" => {
                    bs = parse_size(value).ok().filter(|n| (1..=MAX_BS).contains(n)).ok_or_else(|| {
                        Error::argument(format!("Invalid bs specified. Must be between 1 and {MAX_BS}."))
                    })?;
                }
                "count" => count = Some(number(key, value)?),
                "skip" => skip = Some(number(key, value)?),
                _ => return Err(Error::argument(format!("unrecognized operand {key}"))),
            }
        }
        match (input, output) {
            (Some(input), Some(output)) => Ok(Operands { input, output, bs, count, skip }),
            _ => Err(Error::argument("Must specify both input and output files")),
        }
    }
}

/// `count=` and `skip=`: a plain number of blocks (qemu-img takes no suffix there).
fn number(key: &str, value: &str) -> Result<u64> {
    match value.parse::<i128>() {
        Ok(n) => u64::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_COUNT)
            .ok_or_else(|| Error::argument(format!("Invalid {key} specified. Must be between 0 and {MAX_COUNT}."))),
        Err(_) => Err(Error::argument(format!("Invalid {key} specified: '{value}'."))),
    }
}

/// The copied range, followed by zeros up to a whole sector.
#[derive(Debug)]
struct Padded {
    data: PartitionView,
    len: u64,
}

impl BlockRead for Padded {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_from_usize(buf.len()), self.len)?;
        let inside = self.data.size().saturating_sub(offset).min(u64_from_usize(buf.len()));
        let (head, tail) = buf.split_at_mut(usize::try_from(inside).unwrap_or(0));
        if !head.is_empty() {
            self.data.read_at(head, offset)?;
        }
        tail.fill(0);
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let data = self.data.size();
        if offset < data {
            return self.data.extent_at(offset, max_len);
        }
        range_end(offset, 1, self.len)?;
        Ok(Extent { offset, len: max_len.min(self.len - offset).max(1), alloc: Alloc::Unallocated })
    }

    fn info(&self) -> ImageInfo {
        ImageInfo { virtual_size: self.len, ..self.data.info() }
    }
}

/// `diskcast dd` arguments: qemu-img dd's flags and operands.
#[derive(Debug, Args)]
pub struct DdArgs {
    /// Format of the input (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Format of the output (default raw).
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// if= is qemu's option string `driver=FMT,file.filename=PATH` (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    /// if=INPUT, of=OUTPUT (created), bs=BLOCK_SIZE (default 512, suffixes K, M, G...),
    /// count=BLOCKS (default: the whole input), skip=BLOCKS (skipped at the input's start).
    #[arg(value_name = "OPERAND", required = true)]
    pub operands: Vec<String>,
}
