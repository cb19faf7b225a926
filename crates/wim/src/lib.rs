//! Windows Imaging (WIM) files: splitting one into `.swm` parts, as Windows Setup accepts
//! `sources/install.swm`, `install2.swm`, ... on a FAT32 stick whose files stop at 4 GiB.
//!
//! Format: Microsoft's "Windows Imaging File Format (WIM)" document and wimlib's
//! sources; the layout of the parts is what `wimlib-imagex split` writes (docs/wim.md).
//! Resources are copied as they are (never decompressed or recompressed): a part's
//! content is a [`PlannedImage`](diskcast_tree::PlannedImage) of a few new bytes (its
//! header, blob table and XML) and ranges of the original file, so a 5 GiB WIM inside
//! an ISO is split without copying it anywhere first.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod read;
pub mod spec;
mod split;

pub use split::Part;

use diskcast_block::output::{OutputFiles, refuse_inputs};
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use diskcast_tree::{FileData, HostFile, Kind, Tree, check_name};
use std::path::{Path, PathBuf};

/// The largest file FAT32 holds (4 GiB - 1): the part limit for a FAT32 stick.
pub const FAT32_PART_LIMIT: u64 = 0xffff_ffff;

/// How much of a part [`split_file`] copies at a time.
const COPY_CHUNK: u64 = 4 << 20;

/// The parts of the WIM whose content is `file`, each at most `part_limit` bytes,
/// named `{stem}.swm`, `{stem}2.swm`, ...; `name` is what errors call the WIM.
pub fn plan_parts(file: &FileData, name: &str, stem: &str, part_limit: u64) -> Result<Vec<Part>> {
    let wim = read::read(file, name)?;
    split::plan(&wim, file, stem, part_limit).map_err(|e| e.with_file(name))
}

/// Replaces the WIM file at `path` in `tree` by its parts, each at most `part_limit`
/// bytes (see [`FAT32_PART_LIMIT`]), in the same directory with the WIM's metadata:
/// `sources/install.wim` becomes `sources/install.swm`, `sources/install2.swm`, ...
/// Returns the parts' paths. A name a part needs that is already taken is an error, and
/// the tree is unchanged by any error.
pub fn split_in_tree(tree: &mut Tree, path: &str, part_limit: u64) -> Result<Vec<String>> {
    let id = tree.resolve(path.as_bytes(), false)?;
    let node = tree.node(id);
    let Kind::File(file) = &node.kind else {
        return Err(Error::argument("not a regular file, so not a WIM to split").with_file(path));
    };
    let (dir, file_name) = match path.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), path),
    };
    let parts = plan_parts(file, path, stem(file_name), part_limit)?;
    let meta = node.meta.clone();
    let paths: Vec<String> = parts.iter().map(|p| format!("{dir}{}", p.name)).collect();
    for part in &parts {
        check_name(part.name.as_bytes()).map_err(|e| e.with_file(path))?;
    }
    if let Some(taken) = paths.iter().find(|p| tree.resolve(p.as_bytes(), false).is_ok()) {
        return Err(
            Error::refused(format!("{taken} already exists: a part of the split WIM would replace it")).with_file(path)
        );
    }
    tree.remove(path.as_bytes())?;
    for (p, part) in paths.iter().zip(parts) {
        tree.put_file(p.as_bytes(), part.data, meta.clone())?;
    }
    Ok(paths)
}

/// Splits the WIM file `wim` into parts of at most `part_limit` bytes written into
/// `out_dir` (named after the WIM: `install.wim` gives `install.swm`, `install2.swm`,
/// ...), replacing files of those names, but never the WIM itself. Returns their paths.
/// Nothing is left behind by an error.
pub fn split_file(wim: &Path, out_dir: &Path, part_limit: u64) -> Result<Vec<PathBuf>> {
    let file = FileData::host(HostFile::open_path(wim)?);
    let file_name = wim.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parts = plan_parts(&file, &wim.display().to_string(), stem(&file_name), part_limit)?;
    // Every target is checked before any is written (`install.swm` split into its own
    // directory would be replaced by its first part).
    for part in &parts {
        refuse_inputs(&out_dir.join(&part.name), &[wim])?;
    }
    let out = OutputFiles::new();
    let mut paths = Vec::with_capacity(parts.len());
    let mut buf = vec![0u8; usize_from_u64(COPY_CHUNK, "copy buffer")?];
    for part in &parts {
        let target = out_dir.join(&part.name);
        let dst = out.create(&target)?;
        let mut at = 0u64;
        while at < part.data.size {
            let n = (part.data.size - at).min(COPY_CHUNK);
            let chunk = &mut buf[..usize_from_u64(n, "copy chunk")?];
            part.data.read_at(chunk, at)?;
            dst.write_all_at(chunk, at)?;
            at += u64_from_usize(chunk.len());
        }
        paths.push(target);
    }
    out.commit()?;
    Ok(paths)
}

/// The name without its last extension (`install.wim` -> `install`); a name that is
/// all extension (`.wim`) stays whole.
fn stem(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    }
}
