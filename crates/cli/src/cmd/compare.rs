//! `diskcast compare`: exit 0 when two images hold the same guest bytes, 1 when not.

use crate::common::Images;
use crate::common::args::{JobsArgs, OpenArgs, TlsArgs};
use crate::common::progress::{ProgressMode, reporter};
use clap::Args;
use diskcast_block::Result;
use diskcast_block::copy::first_difference;
use std::path::PathBuf;

pub fn run(a: CompareArgs) -> Result<u8> {
    let images = Images::new(&a.open)?.with_tls(a.tls);
    // Both formats and -j are checked before either image is opened (and a log replayed).
    for f in [&a.format_a, &a.format_b].into_iter().flatten() {
        images.registry.get(f)?;
    }
    let threads = a.jobs.count()?;
    let first = images.open(&a.a, a.format_a.as_deref())?;
    let second = images.open(&a.b, a.format_b.as_deref())?;
    images.refuse_unused_disk_choice(&[(&a.a, &first.info().format), (&a.b, &second.info().format)])?;
    let progress = reporter(if a.progress_bar { ProgressMode::Bar } else { ProgressMode::None }, false);
    let diff = first_difference(first.as_ref(), second.as_ref(), threads, progress.as_ref(), None)?;
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
                // qemu-img's line exactly: scripts match on it.
                println!("Content mismatch at offset {offset}!");
            }
            Ok(1)
        }
    }
}

/// `diskcast compare` arguments.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Format of the first image.
    #[arg(short = 'f', value_name = "FMT")]
    pub format_a: Option<String>,
    /// Format of the second image.
    #[arg(short = 'F', value_name = "FMT")]
    pub format_b: Option<String>,
    /// Show a progress bar.
    #[arg(short = 'p')]
    pub progress_bar: bool,
    #[command(flatten)]
    pub jobs: JobsArgs,
    /// Print nothing, only set the exit status.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    pub a: PathBuf,
    pub b: PathBuf,
}
