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
    let (size, data) = match (&a.src, &a.size) {
        (_, Some(s)) => (parse_size(s)?, Vec::new()),
        (Some(src), None) => {
            let image = images.open(src, a.format.as_deref())?;
            let data = extents(image.as_ref(), true)
                .filter(|e| e.as_ref().map_or(true, |e| e.alloc == Alloc::Data))
                .collect::<Result<Vec<_>>>()?;
            (image.size(), data)
        }
        (None, None) => return Err(Error::argument("give a source image or --size")),
    };
    let m = driver.measure(size, &data, &opts)?;
    match a.output {
        OutputFormat::Json => print_json(&json!({"required": m.required, "fully-allocated": m.fully_allocated})),
        OutputFormat::Human => {
            println!("required size: {}", m.required);
            println!("fully allocated size: {}", m.fully_allocated);
        }
    }
    Ok(0)
}
