//! System Use Sharing Protocol entries (SUSP 1.12) and the Rock Ridge ones (RRIP 1.12)
//! they carry: NM, PX, PN, SL, TF, CL, PL, RE, plus zisofs' ZF.

use crate::dir::{long_time, short_time};
use crate::{MAX_SYMLINK_TARGET, Regions, SECTOR, read_bytes};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::le32;
use diskcast_tree::{Timestamp, display_name};
use std::collections::HashSet;

/// Most continuation areas followed for one record: real discs use one or two.
const MAX_CE: usize = 32;
/// Most system use bytes gathered for one record (names and link targets of a few KiB).
const MAX_SU_BYTES: usize = 256 << 10;

/// SL component flags (RRIP 1.12 §4.1.3.1).
const SL_CONTINUE: u8 = 1;
const SL_CURRENT: u8 = 2;
const SL_PARENT: u8 = 4;
const SL_ROOT: u8 = 8;

/// What a record's Rock Ridge entries say.
#[derive(Debug, Default, Clone)]
pub struct RockRidge {
    /// NM: the POSIX name.
    pub name: Option<Vec<u8>>,
    /// PX: mode (with type bits), links, uid, gid, inode number.
    pub px: Option<Px>,
    /// PN: device number (high, low).
    pub pn: Option<(u32, u32)>,
    /// SL: symlink target.
    pub symlink: Option<Vec<u8>>,
    /// TF: modification, access, attribute change times.
    pub mtime: Option<Timestamp>,
    pub atime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
    /// CL: this entry is a moved directory now at this sector.
    pub child_link: Option<u32>,
    /// RE: this directory was moved here from deeper down; hidden at this place.
    pub relocated: bool,
    /// ZF: zisofs (log2 block size, uncompressed size).
    pub zf: Option<(u8, u32)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Px {
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Whether the root's `.` record starts with the SP entry that marks SUSP use, and how
/// many bytes each system use area skips before its entries.
pub fn sp_skip(root_dot_su: &[u8]) -> Option<usize> {
    let sp = root_dot_su;
    (sp.len() >= 7 && &sp[0..2] == b"SP" && sp[2] >= 7 && sp[4] == 0xBE && sp[5] == 0xEF).then(|| usize::from(sp[6]))
}

/// Every SUSP entry (signature, whole entry) of a system use area `su` and the
/// continuation areas it chains to, in order. `skip` is SP's LEN_SKP. CE loops and
/// oversized chains are errors, and so is an area that overlaps one another record (or
/// this one) already used: `regions` holds them for the whole tree.
pub fn entries_of(
    disk: &dyn BlockRead,
    su: &[u8],
    skip: usize,
    at: u64,
    regions: &mut Regions,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut area = su.get(skip..).unwrap_or(&[]).to_vec();
    let mut seen = HashSet::new();
    let mut total = 0usize;
    let mut hops = 0;
    loop {
        let mut next = None;
        let mut pos = 0;
        while pos + 4 <= area.len() {
            let sig = [area[pos], area[pos + 1]];
            let len = usize::from(area[pos + 2]);
            if len < 4 || pos + len > area.len() {
                // Padding or a broken tail: SUSP says stop here.
                break;
            }
            let data = &area[pos..pos + len];
            match &sig {
                b"ST" => break,
                b"CE" if len >= 28 => {
                    next = Some((
                        le32(data, 4, "Rock Ridge entry")?,
                        le32(data, 12, "Rock Ridge entry")?,
                        le32(data, 20, "Rock Ridge entry")?,
                    ));
                }
                _ => out.push((sig.to_vec(), data.to_vec())),
            }
            pos += len;
        }
        let Some((block, off, len)) = next else { break };
        hops += 1;
        if hops > MAX_CE || !seen.insert((block, off)) {
            return Err(Error::corrupt("Rock Ridge continuation areas (CE) loop").with_field("CE").with_offset(at));
        }
        total = total.saturating_add(diskcast_layout::usize_from(len));
        if total > MAX_SU_BYTES {
            return Err(Error::corrupt("Rock Ridge continuation areas are too large").with_field("CE").with_offset(at));
        }
        let start = u64::from(block) * SECTOR + u64::from(off);
        regions.claim(start, u64::from(len), "Rock Ridge continuation area", at).map_err(|e| e.with_field("CE"))?;
        area = read_bytes(disk, start, u64::from(len), "Rock Ridge continuation area")?;
    }
    Ok(out)
}

/// Interprets the entries of one record.
pub fn rock_ridge(entries: &[(Vec<u8>, Vec<u8>)], at: u64) -> Result<RockRidge> {
    let mut rr = RockRidge::default();
    let mut name: Option<Vec<u8>> = None;
    let mut link = SymlinkBuilder::default();
    let mut saw_sl = false;
    let mut link_fits = true;
    for (sig, d) in entries {
        match sig.as_slice() {
            b"NM" if d.len() >= 5 => {
                let flags = d[4];
                let part: &[u8] = if flags & 2 != 0 {
                    b"."
                } else if flags & 4 != 0 {
                    b".."
                } else {
                    &d[5..]
                };
                name.get_or_insert_with(Vec::new).extend_from_slice(part);
            }
            b"PX" if d.len() >= 36 => {
                rr.px = Some(Px {
                    mode: le32(d, 4, "Rock Ridge entry")?,
                    nlink: le32(d, 12, "Rock Ridge entry")?,
                    uid: le32(d, 20, "Rock Ridge entry")?,
                    gid: le32(d, 28, "Rock Ridge entry")?,
                });
            }
            b"PN" if d.len() >= 20 => rr.pn = Some((le32(d, 4, "Rock Ridge entry")?, le32(d, 12, "Rock Ridge entry")?)),
            b"SL" if d.len() >= 5 => {
                saw_sl = true;
                link_fits &= link.add(&d[5..]);
            }
            b"TF" if d.len() >= 5 => {
                let flags = d[4];
                let size = if flags & 0x80 != 0 { 17 } else { 7 };
                let mut pos = 5;
                for bit in 0..7 {
                    if flags & (1 << bit) == 0 {
                        continue;
                    }
                    let Some(b) = d.get(pos..pos + size) else { break };
                    pos += size;
                    let t = if size == 17 { long_time(b) } else { Some(short_time(b)) };
                    match bit {
                        1 => rr.mtime = t,
                        2 => rr.atime = t,
                        3 => rr.ctime = t,
                        _ => {}
                    }
                }
            }
            b"CL" if d.len() >= 12 => rr.child_link = Some(le32(d, 4, "Rock Ridge entry")?),
            b"RE" => rr.relocated = true,
            b"ZF" if d.len() >= 16 => {
                if &d[4..6] != b"pz" {
                    return Err(Error::unsupported(format!(
                        "zisofs algorithm {:?} (only \"pz\", zlib, is defined)",
                        String::from_utf8_lossy(&d[4..6])
                    ))
                    .with_field("ZF")
                    .with_offset(at));
                }
                rr.zf = Some((d[7], le32(d, 8, "Rock Ridge entry")?));
            }
            _ => {}
        }
    }
    if !link_fits {
        let name = name.as_deref().map(display_name).unwrap_or_else(|| "(no NM)".into());
        return Err(Error::out_of_bounds(format!(
            "Rock Ridge symlink {name}: target longer than {MAX_SYMLINK_TARGET} bytes (Linux's PATH_MAX without its NUL)"
        ))
        .with_field("SL")
        .with_offset(at));
    }
    rr.name = name;
    if saw_sl {
        rr.symlink = Some(link.finish());
    }
    Ok(rr)
}

/// Joins SL component records (RRIP 1.12 §4.1.3.1) into a target path the way Linux
/// (fs/isofs/rock.c) and libarchive do: a ROOT component writes a `/` where it stands, so
/// only a leading one makes the target absolute (mkisofs records the empty components of
/// `.///file` as ROOT); a `/` goes between components unless the earlier one is continued
/// or a ROOT. Components with other flags (RRIP's obsolete volume root and host) write
/// nothing.
#[derive(Default)]
struct SymlinkBuilder {
    out: Vec<u8>,
    /// A `/` is due before the next component.
    sep: bool,
}

impl SymlinkBuilder {
    /// Adds the component records of one SL entry; false once the target would exceed
    /// [`MAX_SYMLINK_TARGET`] (the caller reports it).
    fn add(&mut self, mut recs: &[u8]) -> bool {
        while let [flags, len, rest @ ..] = recs {
            let Some(content) = rest.get(..usize::from(*len)) else { break };
            recs = &rest[content.len()..];
            let text: &[u8] = match flags & !SL_CONTINUE {
                0 => content,
                SL_CURRENT => b".",
                SL_PARENT => b"..",
                SL_ROOT => b"/",
                _ => b"",
            };
            let sep = usize::from(self.sep);
            if self.out.len() + sep + text.len() > MAX_SYMLINK_TARGET {
                return false;
            }
            if self.sep {
                self.out.push(b'/');
            }
            self.out.extend_from_slice(text);
            self.sep = flags & !SL_CONTINUE != SL_ROOT && flags & SL_CONTINUE == 0;
        }
        true
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_components_join() {
        let mut b = SymlinkBuilder::default();
        // "/", "usr", "..", "li" + "b" continued.
        b.add(&[8, 0, 0, 3, b'u', b's', b'r', 4, 0, 1, 2, b'l', b'i']);
        b.add(&[0, 1, b'b']);
        assert_eq!(b.finish(), b"/usr/../lib");
        let mut b = SymlinkBuilder::default();
        b.add(&[4, 0, 0, 3, b'e', b't', b'c']);
        assert_eq!(b.finish(), b"../etc");
        // mkisofs' `.///file`: ROOT components in the middle write `/` where they stand.
        let mut b = SymlinkBuilder::default();
        b.add(&[2, 0, 8, 0, 8, 0, 0, 4, b'f', b'i', b'l', b'e']);
        assert_eq!(b.finish(), b".///file");
    }
}
