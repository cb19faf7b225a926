//! Build information embedded in executables: Go's `.go.buildinfo` section (module
//! path, Go version, dependencies; format of Go's `debug/buildinfo`, Go 1.18+) and
//! cargo-auditable's `.dep-v0` section (zlib-compressed JSON of the crates linked in).
//! Only the ELF header, the section table and those sections are read.

use crate::inventory::{Inventory, push_lang};
use diskcast_layout::{Cursor, le16, le32, le64, u64_from_usize, usize_from, usize_from_u64};
use diskcast_tree::FileData;
use std::io::Read;

/// Largest section table read (64-byte entries: 65536 sections).
const MAX_SECTION_TABLE: u64 = 4 << 20;
/// Largest `.shstrtab` read.
const MAX_SECTION_NAMES: u64 = 1 << 20;
/// Largest `.go.buildinfo` section read (the header and the module list: a few KiB, a
/// large program's dependencies some hundred KiB).
const MAX_GO_BUILDINFO: u64 = 8 << 20;
/// Largest `.dep-v0` read, compressed and inflated.
const MAX_AUDIT_BYTES: u64 = 8 << 20;

/// Largest executable whose build info is looked for (binaries in a stream are read
/// whole, in stream order; larger ones are skipped).
pub const MAX_BINARY_BYTES: u64 = 512 << 20;

/// Reads the build information of `f` when it is an ELF binary that has some: only its
/// header, section table and build-info sections.
pub(crate) fn scan(f: &FileData, inv: &mut Inventory, shown: &str) -> Result<(), String> {
    let read = |off: u64, len: u64| -> Result<Vec<u8>, String> {
        let n = usize_from_u64(len, "section size").map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; n];
        f.read_at(&mut buf, off).map_err(|e| format!("{shown}: {e}"))?;
        Ok(buf)
    };
    scan_with(f.size, read, inv, shown)
}

/// [`scan`] of a binary already in memory.
pub(crate) fn scan_bytes(b: &[u8], inv: &mut Inventory, shown: &str) -> Result<(), String> {
    let read = |off: u64, len: u64| -> Result<Vec<u8>, String> {
        let at = usize_from_u64(off, "section offset").map_err(|e| e.to_string())?;
        let n = usize_from_u64(len, "section size").map_err(|e| e.to_string())?;
        Ok(diskcast_layout::bytes(b, at, n, "section").map_err(|e| format!("{shown}: {e}"))?.to_vec())
    };
    scan_with(u64_from_usize(b.len()), read, inv, shown)
}

fn scan_with(
    size: u64,
    read: impl Fn(u64, u64) -> Result<Vec<u8>, String>,
    inv: &mut Inventory,
    shown: &str,
) -> Result<(), String> {
    if size < 64 {
        return Ok(());
    }
    let head = read(0, 64)?;
    // 64-bit little-endian ELF only: what Go and Rust build for Linux on x86-64 and arm64.
    if !head.starts_with(b"\x7fELF\x02\x01") {
        return Ok(());
    }
    let err = |e: diskcast_layout::LayoutError| format!("{shown}: damaged ELF header: {e}");
    let shoff = le64(&head, 0x28, "e_shoff").map_err(err)?;
    let shentsize = u64::from(le16(&head, 0x3a, "e_shentsize").map_err(err)?);
    let shnum = u64::from(le16(&head, 0x3c, "e_shnum").map_err(err)?);
    let shstrndx = u64::from(le16(&head, 0x3e, "e_shstrndx").map_err(err)?);
    let table_len = shentsize * shnum;
    if shentsize < 64 || table_len > MAX_SECTION_TABLE {
        return Ok(());
    }
    if shoff.checked_add(table_len).is_none_or(|e| e > size) {
        // The section table is the last thing a linker writes: a file that ends before
        // it was cut short (its build info may be cut too).
        return Err(format!(
            "{shown}: truncated ELF file: its section table ({shnum} entries at offset {shoff}) ends past its \
             {size} bytes; build info not read"
        ));
    }
    let table = read(shoff, table_len)?;
    let section = |i: u64| -> Result<(u32, u64, u64), String> {
        let at = usize_from_u64(i * shentsize, "section").map_err(|e| e.to_string())?;
        let name = le32(&table, at, "sh_name").map_err(err)?;
        let off = le64(&table, at + 0x18, "sh_offset").map_err(err)?;
        let len = le64(&table, at + 0x20, "sh_size").map_err(err)?;
        // Not checked against the file here: `.bss` and other NOBITS sections have an
        // offset and a size but no bytes. The sections read are bounded by `read`.
        Ok((name, off, len))
    };
    if shstrndx >= shnum {
        return Ok(());
    }
    let (_, stroff, strsize) = section(shstrndx)?;
    let names = read(stroff, strsize.min(MAX_SECTION_NAMES))?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = names.get(usize_from(name)..).unwrap_or(b"");
        let name = name.split(|&c| c == 0).next().unwrap_or(b"");
        if name == b".go.buildinfo" {
            if size > MAX_GO_BUILDINFO {
                return Err(format!("{shown}: .go.buildinfo of {size} bytes, more than the MAX_GO_BUILDINFO cap"));
            }
            go(inv, &read(off, size)?, shown)?;
        } else if name == b".dep-v0" {
            if size > MAX_AUDIT_BYTES {
                return Err(format!("{shown}: .dep-v0 of {size} bytes, more than the MAX_AUDIT_BYTES cap"));
            }
            cargo_auditable(inv, &read(off, size)?, shown)?;
        }
    }
    Ok(())
}

/// Go's build info: the 14-byte magic, pointer size, flags (bit 1: the strings follow
/// inline, Go 1.18+), then at offset 32 two varint-prefixed strings: the Go version and
/// the module info (`path`, `mod`, `dep`, `=>` lines between 16-byte sentinels).
fn go(inv: &mut Inventory, b: &[u8], shown: &str) -> Result<(), String> {
    if !b.starts_with(b"\xff Go buildinf:") || b.len() < 32 {
        return Err(format!("{shown}: .go.buildinfo without its magic"));
    }
    if b[15] & 2 == 0 {
        return Err(format!("{shown}: Go build info of a Go older than 1.18 (pointers, not inline strings): not read"));
    }
    let mut c = Cursor::new(&b[32..], "Go build info");
    let mut string = || -> Result<String, String> {
        let mut len = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = c.u8().map_err(|e| format!("{shown}: {e}"))?;
            len |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let len = usize_from_u64(len, "Go build info string").map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(c.take(len).map_err(|e| format!("{shown}: {e}"))?).into_owned())
    };
    let _go_version = string()?;
    let modinfo = string()?;
    // The sentinels: 16 bytes each side when present.
    let modinfo = if modinfo.len() >= 33 && modinfo.is_char_boundary(16) && modinfo.is_char_boundary(modinfo.len() - 16)
    {
        &modinfo[16..modinfo.len() - 16]
    } else {
        modinfo.as_str()
    };
    let mut last: Option<usize> = None;
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod", path, version, ..] => {
                // A main module built from a work tree says `(devel)`: no version.
                let v = if *version == "(devel)" { "" } else { version };
                push_go(inv, path, v, shown);
                last = None;
            }
            ["dep", path, version, ..] => {
                push_go(inv, path, version, shown);
                last = Some(inv.packages.len() - 1);
            }
            // A replacement of the dependency above: what was actually built in.
            ["=>", path, version, ..] => {
                if let Some(i) = last.take() {
                    inv.packages.remove(i);
                    push_go(inv, path, version, shown);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn push_go(inv: &mut Inventory, path: &str, version: &str, shown: &str) {
    let (ns, name) = path.rsplit_once('/').map_or((None, path), |(n, m)| (Some(n), m));
    push_lang(inv, "golang", ns, name, version, None, shown.to_string());
    if let Some(p) = inv.packages.last_mut().filter(|p| p.kind == "golang") {
        p.name = path.to_string();
    }
}

/// cargo-auditable: `{"packages": [{"name", "version", "source", "kind"?, ...}]}`.
fn cargo_auditable(inv: &mut Inventory, b: &[u8], shown: &str) -> Result<(), String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(b)
        .take(MAX_AUDIT_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("{shown}: damaged .dep-v0 (zlib): {e}"))?;
    if u64_from_usize(json.len()) > MAX_AUDIT_BYTES {
        return Err(format!("{shown}: .dep-v0 inflates past the {MAX_AUDIT_BYTES}-byte MAX_AUDIT_BYTES cap"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| format!("{shown}: .dep-v0 is not cargo-auditable JSON: {e}"))?;
    for p in v.get("packages").and_then(|p| p.as_array()).into_iter().flatten() {
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
        // Build-time dependencies (build scripts, proc macros) are not in the binary.
        if s("kind") == "build" {
            continue;
        }
        push_lang(inv, "cargo", None, s("name"), s("version"), None, shown.to_string());
    }
    Ok(())
}
