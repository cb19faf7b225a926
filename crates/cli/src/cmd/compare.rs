//! `diskcast compare`: exit 0 when two images hold the same guest bytes, 1 when not.

use super::{Images, threads};
use crate::args::{CompareArgs, ProgressMode};
use crate::progress::reporter;
use diskcast_block::Result;
use diskcast_block::copy::first_difference;

pub fn run(a: CompareArgs) -> Result<u8> {
    let images = Images::new(&a.open)?;
    // Both formats and -j are checked before either image is opened (and a log replayed).
    for f in [&a.format_a, &a.format_b].into_iter().flatten() {
        images.registry.get(f)?;
    }
    threads(a.threads)?;
    let first = images.open(&a.a, a.format_a.as_deref())?;
    let second = images.open(&a.b, a.format_b.as_deref())?;
    let progress = reporter(if a.progress_bar { ProgressMode::Bar } else { ProgressMode::None }, false);
    let diff = first_difference(first.as_ref(), second.as_ref(), threads(a.threads)?, progress.as_ref())?;
    match diff {
        None => {
            if !a.quiet {
                if first.size() == second.size() {
                    println!("Images are identical.");
                } else {
                    println!(
                        "Images are identical (the larger one reads as zeros past {} bytes).",
                        first.size().min(second.size())
                    );
                }
            }
            Ok(0)
        }
        Some(offset) => {
            if !a.quiet {
                println!("Content mismatch at offset {offset} ({offset:#x})!");
            }
            Ok(1)
        }
    }
}
