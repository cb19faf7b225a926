//! Java archives: the `META-INF/maven/GROUP/ARTIFACT/pom.properties` Maven puts in every
//! jar, also inside the jars nested in a war, an ear or a fat jar. The zip is read here
//! (central directory, stored or deflated members), bounded: nesting depth, members and
//! total inflated bytes per archive are capped, so a zip bomb costs at most the caps.

use crate::inventory::{Inventory, push_lang};
use diskcast_layout::{le16, le32, usize_from};
use std::io::Read;

/// Largest archive read (fat jars of a few hundred MiB exist; larger is refused by name).
pub const MAX_ARCHIVE_BYTES: u64 = 512 << 20;
/// Deepest nesting of archives read (a jar in a war in an ear is 2).
pub const MAX_NESTING: u32 = 3;
/// Most bytes inflated from one archive and everything nested in it: a zip bomb stops
/// here.
pub const MAX_INFLATED_BYTES: u64 = 512 << 20;
/// Most central directory entries read per archive.
pub const MAX_MEMBERS: usize = 1 << 18;

/// Lists the Maven packages in the archive `bytes` (the file `shown`).
pub(crate) fn scan_bytes(bytes: &[u8], shown: &str, inv: &mut Inventory) -> Result<(), String> {
    let mut budget = MAX_INFLATED_BYTES;
    scan_zip(bytes, shown, 0, &mut budget, inv)
}

fn scan_zip(zip: &[u8], shown: &str, depth: u32, budget: &mut u64, inv: &mut Inventory) -> Result<(), String> {
    let err = |e: diskcast_layout::LayoutError| format!("{shown}: not a readable zip: {e}");
    // The end of central directory record: in the last 22 + 65535 bytes.
    let tail = zip.len().saturating_sub(22 + 0xffff);
    let eocd = (tail..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| zip[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| format!("{shown}: not a zip (no end of central directory)"))?;
    let count = usize::from(le16(zip, eocd + 10, "zip entry count").map_err(err)?);
    let mut at = usize_from(le32(zip, eocd + 16, "zip central directory offset").map_err(err)?);
    if count == 0xffff || at == 0xffff_ffff {
        return Err(format!("{shown}: a zip64 archive, which is not read"));
    }
    for _ in 0..count.min(MAX_MEMBERS) {
        if le32(zip, at, "zip central header").map_err(err)? != 0x0201_4b50 {
            return Err(format!("{shown}: damaged zip central directory at offset {at}"));
        }
        let method = le16(zip, at + 10, "zip method").map_err(err)?;
        let csize = usize_from(le32(zip, at + 20, "zip compressed size").map_err(err)?);
        let usize_ = u64::from(le32(zip, at + 24, "zip size").map_err(err)?);
        let nlen = usize::from(le16(zip, at + 28, "zip name length").map_err(err)?);
        let elen = usize::from(le16(zip, at + 30, "zip extra length").map_err(err)?);
        let clen = usize::from(le16(zip, at + 32, "zip comment length").map_err(err)?);
        let local = usize_from(le32(zip, at + 42, "zip local header offset").map_err(err)?);
        let name = diskcast_layout::bytes(zip, at + 46, nlen, "zip member name").map_err(err)?.to_vec();
        at = at + 46 + nlen + elen + clen;
        let is_pom = name.starts_with(b"META-INF/maven/") && name.ends_with(b"/pom.properties");
        let nested = [&b".jar"[..], b".war", b".ear"].iter().any(|e| name.ends_with(e));
        if !is_pom && !nested {
            continue;
        }
        let member = format!("{shown}!/{}", String::from_utf8_lossy(&name));
        if nested && depth + 1 > MAX_NESTING {
            inv.warnings.push(format!("{member}: nested deeper than the MAX_NESTING cap ({MAX_NESTING}): not read"));
            continue;
        }
        if usize_ > *budget {
            return Err(format!(
                "{member}: inflating it would pass the {MAX_INFLATED_BYTES}-byte MAX_INFLATED_BYTES cap of the archive"
            ));
        }
        *budget -= usize_;
        let data = member_data(zip, local, method, csize, usize_).map_err(|e| format!("{member}: {e}"))?;
        if is_pom {
            pom_properties(inv, &data, member);
        } else if let Err(w) = scan_zip(&data, &member, depth + 1, budget, inv) {
            inv.warnings.push(w);
        }
    }
    Ok(())
}

/// The bytes of one member: stored, or deflated and inflated to at most `size` bytes.
fn member_data(zip: &[u8], local: usize, method: u16, csize: usize, size: u64) -> Result<Vec<u8>, String> {
    let e = |e: diskcast_layout::LayoutError| e.to_string();
    if le32(zip, local, "zip local header").map_err(e)? != 0x0403_4b50 {
        return Err("damaged zip local header".into());
    }
    let nlen = usize::from(le16(zip, local + 26, "zip name length").map_err(e)?);
    let elen = usize::from(le16(zip, local + 28, "zip extra length").map_err(e)?);
    let raw = diskcast_layout::bytes(zip, local + 30 + nlen + elen, csize, "zip member data").map_err(e)?;
    match method {
        0 => Ok(raw.to_vec()),
        8 => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .take(size)
                .read_to_end(&mut out)
                .map_err(|e| format!("damaged deflate data: {e}"))?;
            Ok(out)
        }
        m => Err(format!("zip compression method {m}, which is not read (stored and deflate are)")),
    }
}

/// `pom.properties`: `groupId`, `artifactId`, `version` lines.
pub(crate) fn pom_properties(inv: &mut Inventory, bytes: &[u8], found_in: String) {
    let text = String::from_utf8_lossy(bytes);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.split_once('=').filter(|(a, _)| a.trim() == k).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default()
    };
    push_lang(inv, "maven", Some(&field("groupId")), &field("artifactId"), &field("version"), None, found_in);
}
