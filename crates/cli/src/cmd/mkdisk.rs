//! `diskcast mkdisk -o OUT --part TYPE:FS:SIZE[:SRC] ...`: a partitioned disk in one
//! pass, written straight into any block format.
//!
//! Each partition's filesystem is planned by its [`FsBuilder`] from the filesystem
//! registry (knowing where on the disk it will sit; the registry also gives its MBR id),
//! and [`DiskComposer`] (shared with `vm`) makes the table and all of it one planned image
//! that the copy engine writes: no intermediate files, no root, no loop device. The disk
//! goes out through the one [`ImageWriter`].

use crate::common::args::{OutputArgs, SourceArgs};
use crate::common::build::identity;
use crate::common::output::ImageWriter;
use crate::common::tree_source::{input_path, open as open_source};
use clap::Args;
use diskcast_block::provenance::Provenance;
use diskcast_block::size::{count, human, parse_size};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_formats::FsRegistry;
use diskcast_part::compose::{ComposedDisk, DiskComposer};
use diskcast_part::{PartSpec, PartType, TableKind, Uuid};
use diskcast_tree::{BuildOptions, FsBuilder, Meta, Timestamp, Tree};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct MkdiskArgs {
    /// A partition, in order: [NAME=]TYPE:FS:SIZE[:SRC]. TYPE: esp, root (this machine's
    /// architecture), root-x86-64, root-arm64, linux, swap, fat (basic data; on MBR 0x0c,
    /// or 0x07 holding exfat), bios (BIOS boot, GPT). FS: ext4, fat32, fat16, exfat,
    /// iso9660 (`diskcast formats` lists them), or none (left zeroed). SIZE: a size (K, M, G) or auto (content plus headroom).
    /// SRC: the tree to store (a directory, a tar, a disk image DISK[:PART]); without it
    /// the filesystem is empty. NAME is the GPT name (default: TYPE).
    #[arg(long = "part", value_name = "SPEC", required = true)]
    pub parts: Vec<String>,
    /// Partition table.
    #[arg(long, value_name = "gpt|mbr", default_value = "gpt")]
    pub table: String,
    /// Disk size; default: just large enough for the partitions.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Partition number to mark active (MBR) or legacy-BIOS-bootable (GPT).
    #[arg(long, value_name = "N")]
    pub bootable: Option<u32>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// One `--part`, checked.
struct Part<'r> {
    name: String,
    kind: PartType,
    /// The builder and the MBR id a partition of `kind` holding its filesystem gets.
    fs: Option<(&'r dyn FsBuilder, u8)>,
    size: Option<u64>,
    src: Option<String>,
}

fn parse_part<'r>(spec: &str, registry: &'r FsRegistry) -> Result<Part<'r>> {
    let bad = |why: &str| Error::argument(format!("--part {spec:?}: {why}; expected [NAME=]TYPE:FS:SIZE[:SRC]"));
    let mut it = spec.splitn(4, ':');
    let (Some(head), Some(fs), Some(size)) = (it.next(), it.next(), it.next()) else {
        return Err(bad("too few fields"));
    };
    let src = it.next().filter(|s| !s.is_empty()).map(str::to_string);
    let (name, ty) = match head.split_once('=') {
        Some((n, t)) => (n.to_string(), t),
        None => (head.to_string(), head),
    };
    let kind = PartType::parse(ty).ok_or_else(|| bad(&format!("unknown partition type {ty:?}")))?;
    if name.encode_utf16().count() > 36 {
        return Err(bad("a GPT name holds at most 36 UTF-16 units"));
    }
    let fs = match fs {
        "none" => None,
        f => {
            let (fs, builder) = registry.builder(f)?;
            Some((builder, fs.mbr_id(kind)))
        }
    };
    let size = match size {
        "auto" => None,
        s => Some(parse_size(s)?),
    };
    if fs.is_none() && (size.is_none() || src.is_some()) {
        return Err(bad("a partition without a filesystem needs a size and takes no SRC"));
    }
    Ok(Part { name, kind, fs, size, src })
}

pub fn run(a: MkdiskArgs) -> Result<u8> {
    let out = a.out.resolve()?;
    let kind = match a.table.as_str() {
        "gpt" => TableKind::Gpt,
        "mbr" | "dos" => TableKind::Mbr,
        t => return Err(Error::argument(format!("--table {t:?}: gpt or mbr"))),
    };
    let registry = diskcast_formats::filesystems();
    let parts = a.parts.iter().map(|p| parse_part(p, &registry)).collect::<Result<Vec<_>>>()?;
    if let Some(n) = a.bootable
        && (n == 0 || n as usize > parts.len())
    {
        return Err(Error::argument(format!(
            "--bootable {n}: the disk has {} (numbered from 1)",
            count(parts.len(), "partition", "partitions")
        )));
    }
    let disk_size = a.size.as_deref().map(parse_size).transpose()?;
    let inputs: Vec<_> = parts.iter().filter_map(|p| p.src.as_deref().and_then(input_path)).collect();
    let writer = ImageWriter::new(&out, &inputs)?;
    let prov = Provenance::from_env()?;
    let (now, disk_id) = identity(&prov, &format!("mkdisk {:?} {:?}", a.parts, a.size));

    // Plan each filesystem where it will sit: the composer knows where the next
    // partition starts once the sizes before it are.
    let mut disk = DiskComposer::new(kind);
    for (i, p) in parts.iter().enumerate() {
        let start = disk.next_start();
        let (_, id) = identity(&prov, &format!("mkdisk {:?} {:?} part {i}", a.parts, a.size));
        let (len, image, mbr_id) = match p.fs {
            Some((b, mbr_id)) => {
                let (tree, from) = match &p.src {
                    Some(src) => {
                        let o = open_source(src, &a.source, writer.threads())?;
                        (o.tree, o.description)
                    }
                    None => (Tree::new(Meta::new(0o755, Timestamp::from_secs(now))), "an empty tree".to_string()),
                };
                let label = Some(p.name.clone()).filter(|n| {
                    n.len() <= 11 && n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                });
                let opts = BuildOptions { size: p.size, label, now, id, disk_offset: start, variant: None };
                let built = b.plan(&tree, &opts)?;
                for w in &built.warnings {
                    eprintln!("diskcast: warning: partition {} ({}): {w}", i + 1, p.name);
                }
                eprintln!("diskcast: partition {} ({}): {} from {from}", i + 1, p.name, built.description);
                let image: Arc<dyn BlockRead> = Arc::new(built.image);
                (image.size(), Some(image), Some(mbr_id))
            }
            None => (p.size.unwrap_or(0), None, None),
        };
        let uuid = Uuid::from_bytes(id);
        let bootable = a.bootable == Some(i as u32 + 1);
        disk.push(PartSpec { name: p.name.clone(), kind: p.kind, size: len, uuid, bootable, mbr_id }, image)?;
    }
    let ComposedDisk { plan, image: disk } = disk.finish(disk_size, Uuid::from_bytes(disk_id))?;
    writer.write(&disk)?;
    eprintln!(
        "diskcast: wrote {} ({} {}, {})",
        out.output.display(),
        human(plan.disk_size),
        kind.name(),
        count(plan.parts.len(), "partition", "partitions")
    );
    Ok(0)
}
