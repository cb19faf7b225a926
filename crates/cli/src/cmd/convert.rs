//! `diskcast convert`: any readable image to any writable format, in parallel.

use super::{Images, create_options, threads};
use crate::args::ConvertArgs;
use crate::progress::reporter;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::registry::CreateOptions;
use diskcast_block::size::parse_size;
use diskcast_block::{BlockWrite, Error, Result, ResultExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Pipe buffer: large writes keep the reader on the other end busy.
const STDOUT_BUFFER: usize = 4 << 20;

pub fn run(a: ConvertArgs) -> Result<u8> {
    let images = Images::new(&a.open)?;
    let src = images.open(&a.src, a.format.as_deref())?;
    let min_sparse = match parse_size(&a.min_sparse)? {
        0 => None,
        n => Some(n),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .map_err(|e| Error::argument(format!("cannot install the Ctrl-C handler: {e}")))?;
    let opts = CopyOptions { threads: threads(a.threads)?, min_sparse, cancel: Some(cancel), ..CopyOptions::default() };
    let progress = reporter(a.progress, a.progress_bar);
    let driver = images.registry.get(&a.output_format)?;
    let create_opts = create_options(&a.options, a.compress)?;

    if a.dst.as_os_str() == "-" {
        create_opts.check_keys(driver)?;
        let out = Box::new(std::io::BufWriter::with_capacity(STDOUT_BUFFER, std::io::stdout()));
        let dst = stream_writer(driver.name(), out, src.size(), &create_opts)?;
        copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref())?;
        dst.finish()?;
        return Ok(0);
    }

    refuse_same_file(&a.src, &a.dst)?;
    let out = OutputFiles::new();
    let dst: Box<dyn BlockWrite> = driver.create(&a.dst, src.size(), &create_opts, &out).file(&a.dst)?;
    copy(src.as_ref(), dst.as_ref(), &opts, progress.as_ref()).file(&a.dst)?;
    dst.finish().file(&a.dst)?;
    out.commit()?;
    Ok(0)
}

/// A writer for standard output: only formats written strictly front to back can go down
/// a pipe, which are raw and streamOptimized VMDK.
fn stream_writer(
    format: &str,
    out: Box<dyn std::io::Write + Send>,
    size: u64,
    opts: &CreateOptions,
) -> Result<Box<dyn BlockWrite>> {
    let subformat = opts.options.get("subformat").map(String::as_str);
    match (format, subformat) {
        ("raw", _) => Ok(Box::new(diskcast_raw::RawStream::new(out, size))),
        ("vmdk", Some(s)) if s.eq_ignore_ascii_case("streamOptimized") => {
            diskcast_vmdk::stream_optimized_to(out, size, opts)
        }
        _ => Err(Error::argument(format!(
            "writing {format} to standard output is not supported: it needs to seek back into the file; \
             use -O raw or -O vmdk -o subformat=streamOptimized"
        ))),
    }
}

/// Refuses a target that is the source itself (same device and inode, through any name
/// or hard link): renaming over it would destroy the input.
fn refuse_same_file(src_path: &Path, dst: &Path) -> Result<()> {
    let Ok(target) = std::fs::metadata(dst) else { return Ok(()) };
    if target.is_dir() {
        return Err(Error::argument("the target is a directory; name the image file to write").with_file(dst));
    }
    let source = std::fs::metadata(src_path).map_err(|e| Error::io("cannot stat", e).with_file(src_path))?;
    if (source.dev(), source.ino()) == (target.dev(), target.ino()) {
        return Err(Error::argument(format!(
            "the target {} is the source image itself; write to another file",
            dst.display()
        )));
    }
    Ok(())
}
