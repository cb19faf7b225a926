//! `amend -o compat=..,refcount_bits=..,lazy_refcounts=..,size=..`: an existing image's
//! options changed in place, with qemu-img amend's option names, checks and messages.
//!
//! - `refcount_bits`: new refcount blocks and table of the new width are written at the
//!   end of the file from the references `check` counts (the repair's rebuild), the header
//!   is switched to them in one write, and the old structures are then freed.
//! - `compat=1.1` on a v2 image: the header is rewritten as version 3.
//! - `compat=0.10`: zero clusters are expanded as qemu expands them ([`Editor::expand_zero_clusters`]:
//!   zeros written into a preallocated one, a new zeroed cluster where a backing file
//!   would show through, else unallocated), then the header is rewritten as version 2.
//!   Images with snapshots, persistent bitmaps, zstd compression or extended L2 entries
//!   are refused, each naming the reason.
//! - `lazy_refcounts`: the compatible feature bit (v3 only, as qemu).
//! - `size`: grows the image as `resize` does (shrinking is left to `resize --shrink`).
//! - `backing_file`, `backing_fmt`: as qemu, taken only when both say what the image
//!   already records (a no-op); any change is refused, pointing at `rebase`.
//!
//! The image must be clean (`check` finds nothing): a rebuild from wrong references
//! would make the damage permanent.

use crate::bitmap::AUTOCLEAR_BITMAPS;
use crate::check::{Checker, Fix};
use crate::edit::Editor;
use crate::header::{COMPAT_LAZY_REFCOUNTS, Compression, Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, at};
use crate::writer::write_refcount_structures;
use diskcast_block::io::ImageFile;
use diskcast_block::registry::Preallocation;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::BTreeMap;

/// Options qemu accepts only when creating an image (qemu-img amend says so).
const CREATION_ONLY: &[&str] =
    &["cluster_size", "preallocation", "compression_type", "extended_l2", "encryption", "encrypt.format"];

/// What the options ask for.
struct Wanted {
    version: Option<u32>,
    refcount_order: Option<u32>,
    lazy: Option<bool>,
    size: Option<u64>,
    /// `backing_file`, `backing_fmt`: accepted only as the image already has them.
    backing: Option<(Option<String>, Option<String>)>,
}

fn parse(opts: &BTreeMap<String, String>) -> Result<Wanted> {
    let mut w = Wanted { version: None, refcount_order: None, lazy: None, size: None, backing: None };
    for (k, v) in opts {
        match k.as_str() {
            "compat" => {
                w.version = Some(match v.as_str() {
                    "1.1" | "v3" => 3,
                    "0.10" | "v2" => 2,
                    _ => return Err(Error::argument(format!("Invalid compatibility level: '{v}' (0.10 or 1.1)"))),
                })
            }
            "refcount_bits" => {
                let bits: u32 = v.parse().map_err(|_| Error::argument(format!("refcount_bits={v} is not a number")))?;
                if !bits.is_power_of_two() || bits > 64 {
                    return Err(Error::argument("Refcount width must be a power of two and may not exceed 64 bits"));
                }
                w.refcount_order = Some(bits.trailing_zeros());
            }
            "lazy_refcounts" => {
                w.lazy = Some(match v.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(Error::argument(format!("lazy_refcounts={v}: use on or off"))),
                })
            }
            "size" => w.size = Some(parse_size(v)?),
            k if CREATION_ONLY.contains(&k) => {
                return Err(Error::argument(format!(
                    "Invalid parameter '{k}'\nThis option is only supported for image creation"
                )));
            }
            "backing_file" | "backing_fmt" => {
                let (file, fmt) = w.backing.get_or_insert((None, None));
                *(if k == "backing_file" { file } else { fmt }) = Some(v.clone());
            }
            // qemu-img's words; diskcast reads no external data files either.
            "data_file" => {
                return Err(Error::argument("data-file can only be set for images that use an external data file"));
            }
            "data_file_raw" => return Err(Error::argument("data-file-raw cannot be set on existing images")),
            _ => return Err(Error::argument(format!("Invalid parameter '{k}'"))),
        }
    }
    Ok(w)
}

/// Amends the qcow2 image in `file` (open for writing, locked by the caller).
pub fn amend(file: &ImageFile, opts: &BTreeMap<String, String>) -> Result<()> {
    let name = file.path().to_path_buf();
    amend_inner(file, opts).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn amend_inner(file: &ImageFile, opts: &BTreeMap<String, String>) -> Result<()> {
    let w = parse(opts)?;
    let h = Header::read(file)?;
    h.check_supported()?;
    if h.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT) != 0 {
        return Err(Error::refused(
            "the image is marked corrupt or was not closed cleanly (dirty); run `diskcast check -r all` first",
        ));
    }
    // As qemu: the backing file is changed by `rebase`, so amend takes only what it is.
    if let Some((file, fmt)) = &w.backing
        && (*file != h.backing_file || *fmt != h.backing_format)
    {
        return Err(Error::argument("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead."));
    }
    let version = w.version.unwrap_or(h.version);
    let order = w.refcount_order.unwrap_or(h.refcount_order);
    let lazy = w.lazy.unwrap_or(h.compatible & COMPAT_LAZY_REFCOUNTS != 0);
    // qemu's refusals, in its words.
    if version == 2 && order != 4 {
        return Err(Error::argument("compat=0.10 requires refcount_bits=16"));
    }
    if version == 2 && lazy {
        return Err(Error::argument(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
        ));
    }
    if let Some(size) = w.size
        && size < h.size
    {
        return Err(Error::unsupported(
            "amend -o size= only grows in diskcast; shrink with `diskcast resize --shrink`",
        ));
    }
    if version == 2 && h.version == 3 {
        refuse_downgrade(&h)?;
    }
    // Up first (v3 is needed for other widths), the width, then down.
    if version == 3 && h.version == 2 {
        let mut v3 = h.clone();
        v3.version = 3;
        rewrite_header(file, &v3)?;
    }
    if order != h.refcount_order {
        change_refcount_width(file, order)?;
    }
    let h = Header::read(file)?;
    let mut bits = h.compatible & !COMPAT_LAZY_REFCOUNTS;
    if lazy {
        bits |= COMPAT_LAZY_REFCOUNTS;
    }
    if version == 3 && bits != h.compatible {
        write_refcount_fields(file, &Header { compatible: bits, ..h.clone() })?;
    }
    if version == 2 && h.version == 3 {
        // Version 2 has no zero flag: zero clusters become data or unallocated first.
        Editor::open(file)?.expand_zero_clusters()?;
        let h = Header::read(file)?;
        let mut v2 = h.clone();
        v2.version = 2;
        (v2.incompatible, v2.compatible, v2.autoclear) = (0, 0, 0);
        rewrite_header(file, &v2)?;
    }
    if let Some(size) = w.size.filter(|&s| s != h.size) {
        crate::resize::resize(file, size, Preallocation::Off)?;
    }
    file.sync()
}

/// Why a v3 image cannot become v2 here, or `Ok`.
fn refuse_downgrade(h: &Header) -> Result<()> {
    let why = if h.bitmaps.is_some() && h.autoclear & AUTOCLEAR_BITMAPS != 0 {
        Some("it has persistent dirty bitmaps, which version 2 cannot store (remove them with `bitmap --remove`)")
    } else if h.compression == Compression::Zstd {
        Some("its compressed clusters are zstd, which version 2 cannot describe")
    } else if h.extended_l2() {
        Some("it has extended L2 entries, which version 2 cannot describe")
    } else if h.nb_snapshots > 0 {
        Some("it has internal snapshots, whose tables diskcast does not rewrite for version 2")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(Error::unsupported(format!("cannot downgrade the image to compat=0.10: {why}")));
    }
    Ok(())
}

/// Rewrites cluster 0 for `h` (the version changes; every table stays where it is).
fn rewrite_header(file: &ImageFile, h: &Header) -> Result<()> {
    file.sync()?;
    file.write_all_at(&h.serialize()?, 0)?;
    file.sync()
}

/// Writes the header's refcount table, snapshot and feature fields and refcount width
/// (bytes 48..100) from `h` at once.
fn write_refcount_fields(file: &ImageFile, h: &Header) -> Result<()> {
    let mut b = Vec::with_capacity(52);
    b.extend_from_slice(&h.refcount_table_offset.to_be_bytes());
    b.extend_from_slice(&h.refcount_table_clusters.to_be_bytes());
    b.extend_from_slice(&h.nb_snapshots.to_be_bytes());
    b.extend_from_slice(&h.snapshots_offset.to_be_bytes());
    b.extend_from_slice(&h.incompatible.to_be_bytes());
    b.extend_from_slice(&h.compatible.to_be_bytes());
    b.extend_from_slice(&h.autoclear.to_be_bytes());
    b.extend_from_slice(&h.refcount_order.to_be_bytes());
    file.sync()?;
    // From `refcount_table_offset` through `refcount_order`: one write switches the table,
    // its width and the feature bits together.
    file.write_all_at(&b, u64_from_usize(at::REFCOUNT_TABLE_OFFSET))?;
    file.sync()
}

/// New refcount structures of width `2^order` at the end of the file, the header switched
/// to them, then the old ones freed (they are leaks in the new structures).
fn change_refcount_width(file: &ImageFile, order: u32) -> Result<()> {
    let mut c = Checker::analyze(file)?;
    c.compare(Fix::Nothing, None)?;
    c.oflag_copied(None)?;
    let hidden = c.hidden;
    let r = c.report();
    if hidden || r.corruptions > 0 || r.leaks > 0 || r.check_errors > 0 {
        return Err(Error::refused(
            "the image is not consistent (see `diskcast check`); run `diskcast check -r all` before changing \
             refcount_bits",
        ));
    }
    let h = c.header().clone();
    let cs = h.cluster_size();
    let refs = c.references();
    let max = if order >= 6 { u64::MAX } else { (1u64 << (1u32 << order)) - 1 };
    if let Some(i) = refs.iter().position(|&r| u64::from(r) > max) {
        return Err(Error::argument(format!(
            "Cannot decrease refcount entry width to {} bits: cluster {i} has a refcount of {}",
            1u32 << order,
            refs[i]
        )));
    }
    let used = u64_from_usize(refs.iter().rposition(|&r| r > 0).map_or(0, |i| i + 1));
    let start = used.max(file.len()?.div_ceil(cs));
    let (offset, clusters, _) = write_refcount_structures(file, cs, order, start, |i| {
        Ok(refs.get(usize_from_u64(i, "cluster index")?).copied().map_or(0, u64::from))
    })?;
    drop(c);
    write_refcount_fields(
        file,
        &Header { refcount_table_offset: offset, refcount_table_clusters: clusters, refcount_order: order, ..h },
    )?;
    // The old table and blocks still count in the new structures: free them.
    let mut c = Checker::analyze(file)?;
    let mut edit = Editor::open_unchecked(file)?;
    c.compare(Fix::Leaks, Some(&mut edit))?;
    edit.flush()
}
