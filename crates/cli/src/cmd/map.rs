//! `diskcast map`: the allocation map, with how deep in the backing chain each range lives.
//! The JSON is qemu-img map's: `start`, `length`, `depth`, `present`, `zero`, `data`,
//! `compressed`, and `offset` where the data has one place in a file.

use crate::common::Images;
use crate::common::args::{ImageArgs, OutputFormat, TlsArgs};
use diskcast_block::{Alloc, BlockRead, Extent, MapExtent, Result};
use serde_json::json;
use std::io::Write;

/// `map`'s arguments: the image, and `--tls-verify` for an https:// one.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

pub fn run(m: MapArgs) -> Result<u8> {
    let a = m.image;
    let images = Images::new(&a.open)?.with_tls(m.tls);
    let image = images.open(&a.file, a.format.as_deref())?;
    images.refuse_unused_disk_choice(&[(&a.file, &image.info().format)])?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let write_err = |e| diskcast_block::Error::io("cannot write to standard output", e);
    if a.output == OutputFormat::Human {
        writeln!(out, "{:<20}{:<20}{:<8}Holds", "Offset", "Length", "Depth").map_err(write_err)?;
    } else {
        writeln!(out, "[").map_err(write_err)?;
    }
    let mut pos = 0;
    let mut pending: Option<(MapExtent, usize)> = None;
    let mut first = true;
    let size = image.size();
    let mut emit = |(m, depth): (MapExtent, usize), out: &mut dyn Write| -> std::io::Result<()> {
        let e = m.extent;
        if a.output == OutputFormat::Human {
            writeln!(out, "{:<#20x}{:<#20x}{:<8}{}", e.offset, e.len, depth, name(e.alloc))
        } else {
            let mut line = json!({"start": e.offset, "length": e.len, "depth": depth,
                "present": e.alloc != Alloc::Unallocated, "zero": e.alloc.reads_zero(),
                "data": e.alloc == Alloc::Data, "compressed": m.compressed});
            if let (Some(host), Some(obj)) = (m.host, line.as_object_mut()) {
                obj.insert("offset".into(), host.into());
            }
            let sep = if std::mem::take(&mut first) { "" } else { ",\n" };
            write!(out, "{sep}  {line}")
        }
    };
    while pos < size {
        let (m, depth) = resolve(image.as_ref(), pos, size - pos, 0)?;
        pos = m.extent.end();
        match &mut pending {
            // As qemu-img merges: same kind, same depth, and stored right after.
            Some((p, d))
                if p.extent.alloc == m.extent.alloc
                    && *d == depth
                    && p.compressed == m.compressed
                    && match (p.host, m.host) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a + p.extent.len == b,
                        _ => false,
                    } =>
            {
                p.extent.len += m.extent.len
            }
            _ => {
                if let Some(prev) = pending.replace((m, depth)) {
                    emit(prev, &mut out).map_err(write_err)?;
                }
            }
        }
    }
    if let Some(prev) = pending {
        emit(prev, &mut out).map_err(write_err)?;
    }
    if a.output == OutputFormat::Json {
        writeln!(out, "\n]").map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    Ok(0)
}

/// Where the range at `offset` is and the depth of the image that holds it (0 = top).
fn resolve(image: &dyn BlockRead, offset: u64, max: u64, depth: usize) -> Result<(MapExtent, usize)> {
    let m = image.map_extent(offset, max)?;
    let e = m.extent;
    match (e.alloc, image.backing()) {
        (Alloc::Backing, Some(b)) if offset < b.size() => {
            let (below, d) = resolve(b, offset, e.len, depth + 1)?;
            Ok((MapExtent { extent: Extent { len: below.extent.len.min(e.len), ..below.extent }, ..below }, d))
        }
        (Alloc::Backing, _) => Ok((MapExtent { extent: Extent { alloc: Alloc::Unallocated, ..e }, ..m }, depth)),
        _ => Ok((m, depth)),
    }
}

fn name(a: Alloc) -> &'static str {
    match a {
        Alloc::Data => "data",
        Alloc::Zero => "zero",
        Alloc::Unallocated => "unallocated",
        Alloc::Backing => "backing",
    }
}
