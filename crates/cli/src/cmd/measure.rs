//! `diskcast measure`: the size of an image before writing it.

use crate::common::args::{OpenArgs, OutputFormat, TlsArgs};
use crate::common::{Images, create_options, print_json};
use clap::Args;
use diskcast_block::copy::extents;
use diskcast_block::size::parse_size;
use diskcast_block::{Alloc, Error, Result};
use serde_json::json;
use std::path::PathBuf;

pub fn run(a: MeasureArgs) -> Result<u8> {
    let images = Images::new(&a.open)?.with_tls(a.tls);
    let driver = images.registry.get(&a.output_format)?;
    let opts = create_options(&a.options, a.compress)?;
    driver.validate(&opts)?;
    let (size, data, bitmaps) = match (&a.src, &a.size) {
        (_, Some(s)) => (parse_size(s)?, Vec::new(), None),
        (Some(src), None) => {
            let image = images.open(src, a.format.as_deref())?;
            images.refuse_unused_disk_choice(&[(src, &image.info().format)])?;
            let data = extents(image.as_ref(), true)
                .filter(|e| e.as_ref().map_or(true, |e| e.alloc == Alloc::Data))
                .collect::<Result<Vec<_>>>()?;
            (image.size(), data, image.info().persistent_bitmaps)
        }
        (None, None) => return Err(Error::argument("give a source image or --size")),
    };
    let m = driver.measure(size, &data, &opts)?;
    // As qemu-img: `bitmaps` appears when the source can hold persistent bitmaps and the
    // target can carry them over (0 when it has none).
    let bitmap_bytes = match &bitmaps {
        Some(list) => driver.measure_bitmaps(size, list, &opts)?,
        None => None,
    };
    match a.output {
        OutputFormat::Json => {
            let mut v = json!({"required": m.required, "fully-allocated": m.fully_allocated});
            if let (Some(n), Some(obj)) = (bitmap_bytes, v.as_object_mut()) {
                obj.insert("bitmaps".into(), n.into());
            }
            print_json(&v)
        }
        OutputFormat::Human => {
            println!("required size: {}", m.required);
            println!("fully allocated size: {}", m.fully_allocated);
            if let Some(n) = bitmap_bytes {
                println!("bitmaps size: {n}");
            }
        }
    }
    Ok(0)
}

/// `diskcast measure` arguments.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Format to measure for.
    #[arg(short = 'O', long = "output-format", value_name = "FMT")]
    pub output_format: String,
    /// Format options of the new image, comma separated (`diskcast formats` lists them).
    #[arg(short = 'o', long = "format-options", value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    /// Compressed output (measured as uncompressed: an upper bound, as qemu-img does).
    #[arg(short = 'c')]
    pub compress: bool,
    /// Format of SRC (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Measure an empty image of this size instead of a source.
    #[arg(long, value_name = "SIZE", conflicts_with = "src")]
    pub size: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[arg(required_unless_present = "size")]
    pub src: Option<PathBuf>,
}
