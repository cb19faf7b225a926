//! `diskcast map`: the allocation map, with how deep in the backing chain each range lives.

use super::Images;
use crate::args::{ImageArgs, OutputFormat};
use diskcast_block::{Alloc, BlockRead, Extent, Result};
use serde_json::json;
use std::io::Write;

pub fn run(a: ImageArgs) -> Result<u8> {
    let images = Images::new(&a.open)?;
    let image = images.open(&a.file, a.format.as_deref())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let write_err = |e| diskcast_block::Error::io("cannot write to standard output", e);
    if a.output == OutputFormat::Human {
        writeln!(out, "{:<20}{:<20}{:<8}Holds", "Offset", "Length", "Depth").map_err(write_err)?;
    } else {
        writeln!(out, "[").map_err(write_err)?;
    }
    let mut pos = 0;
    let mut pending: Option<(Extent, usize)> = None;
    let mut first = true;
    let size = image.size();
    let mut emit = |(e, depth): (Extent, usize), out: &mut dyn Write| -> std::io::Result<()> {
        if a.output == OutputFormat::Human {
            writeln!(out, "{:<#20x}{:<#20x}{:<8}{}", e.offset, e.len, depth, name(e.alloc))
        } else {
            let line = json!({"start": e.offset, "length": e.len, "depth": depth,
                "present": e.alloc != Alloc::Unallocated, "zero": e.alloc.reads_zero(),
                "data": e.alloc == Alloc::Data});
            let sep = if std::mem::take(&mut first) { "" } else { ",\n" };
            write!(out, "{sep}  {line}")
        }
    };
    while pos < size {
        let (e, depth) = resolve(image.as_ref(), pos, size - pos, 0)?;
        pos = e.end();
        match &mut pending {
            Some((p, d)) if p.alloc == e.alloc && *d == depth => p.len += e.len,
            _ => {
                if let Some(prev) = pending.replace((e, depth)) {
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

/// The extent at `offset` and the depth of the image that holds it (0 = top).
fn resolve(image: &dyn BlockRead, offset: u64, max: u64, depth: usize) -> Result<(Extent, usize)> {
    let e = image.extent_at(offset, max)?;
    match (e.alloc, image.backing()) {
        (Alloc::Backing, Some(b)) if offset < b.size() => {
            let (below, d) = resolve(b, offset, e.len, depth + 1)?;
            Ok((Extent { len: below.len.min(e.len), ..below }, d))
        }
        (Alloc::Backing, _) => Ok((Extent { alloc: Alloc::Unallocated, ..e }, depth)),
        _ => Ok((e, depth)),
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
