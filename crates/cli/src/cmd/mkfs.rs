//! `diskcast mkfs TYPE SRC -o OUT`: a bare filesystem image from any tree source, written
//! straight into any block format.
//!
//! Every filesystem writer is an [`FsBuilder`](diskcast_tree::FsBuilder), picked by name
//! from the filesystem registry ([`diskcast_formats::filesystems`]), that plans a
//! [`PlannedImage`](diskcast_tree::PlannedImage); the copy engine writes the plan into
//! the output driver (sparse, parallel, compressed for `-c`), so `-O qcow2` needs no raw
//! intermediate. `mkdisk` uses the same builders; both write through the one
//! [`ImageWriter`].

use crate::common::args::{OutputArgs, SourceArgs};
use crate::common::build::identity;
use crate::common::output::ImageWriter;
use crate::common::tree_source::{input_path, open as open_source};
use clap::Args;
use diskcast_block::provenance::Provenance;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result};
use diskcast_tree::BuildOptions;

#[derive(Debug, Args)]
pub struct MkfsArgs {
    /// Filesystem: ext4, fat32 (FAT16 below 33 MiB), fat16, exfat, iso9660 (`diskcast
    /// formats` lists them).
    pub fs: String,
    /// The tree to store: a directory, a tar, a disk image (DISK or DISK:PART).
    pub src: String,
    /// Filesystem size (K, M, G suffixes); default: the content plus headroom.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Volume label.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// The filesystem's UUID (ext4's s_uuid; FAT derives its volume ID from it). Default:
    /// random, or derived from SOURCE_DATE_EPOCH when that is set.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(a: MkfsArgs) -> Result<u8> {
    let out = a.out.resolve()?;
    let registry = diskcast_formats::filesystems();
    let (_, builder) = registry.builder(&a.fs)?;
    let size = a.size.as_deref().map(parse_size).transpose()?;
    let uuid = a.uuid.as_deref().map(parse_uuid).transpose()?;
    let writer = ImageWriter::new(&out, &Vec::from_iter(input_path(&a.src)))?;
    let opened = open_source(&a.src, &a.source, writer.threads())?;
    let prov = Provenance::from_env()?;
    let (now, derived) = identity(&prov, &format!("mkfs {} {:?} {:?}", a.fs, size, a.label));
    let id = uuid.unwrap_or(derived);
    let opts = BuildOptions { size, label: a.label.clone(), now, id, ..BuildOptions::default() };
    let built = builder.plan(&opened.tree, &opts)?;
    for w in &built.warnings {
        eprintln!("diskcast: warning: {}: {w}", a.src);
    }
    writer.write(&built.image)?;
    eprintln!("diskcast: wrote {} ({}) from {}", out.output.display(), built.description, opened.description);
    Ok(0)
}

/// `--uuid`: 32 hex digits, hyphens anywhere (`0f1e2d3c-4b5a-...`).
fn parse_uuid(text: &str) -> Result<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    let bad = || {
        Error::argument(format!(
            "--uuid {text:?} is not a UUID (32 hex digits, e.g. 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)"
        ))
    };
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}
