//! `diskcast measure`: the size of an image before writing it.

use super::{Images, create_options, print_json};
use crate::args::{MeasureArgs, OutputFormat};
use diskcast_block::copy::extents;
use diskcast_block::size::parse_size;
use diskcast_block::{Alloc, Error, Result};
use serde_json::json;

pub fn run(a: MeasureArgs) -> Result<u8> {
    let images = Images::new(&a.open)?;
    let driver = images.registry.get(&a.output_format)?;
    let opts = create_options(&a.options, a.compress)?;
    driver.validate(&opts)?;
    let (size, data, bitmaps) = match (&a.src, &a.size) {
        (_, Some(s)) => (parse_size(s)?, Vec::new(), None),
        (Some(src), None) => {
            let image = images.open(src, a.format.as_deref())?;
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
