//! `diskcast iso`: El Torito boot catalogs and hybrid system areas of optical discs.

use super::{Images, print_json};
use crate::args::{OpenArgs, OutputFormat};
use clap::{Args, Subcommand};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_iso9660::eltorito::{BootEntry, read_catalog};
use diskcast_iso9660::hybrid::read_hybrid;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum IsoCommand {
    /// List the El Torito boot entries (BIOS and UEFI) and the hybrid MBR/GPT of a disc.
    #[command(after_help = "\
Each entry shows its platform (bios, uefi), emulation, load segment, the sectors the
firmware loads, where the image is and, when a file of the disc starts there, its path.
With --extract DIR every image is saved as DIR/eltorito_imgN_PLATFORM.img (the names
xorriso -extract_boot_images uses), the whole image: the file's size for no-emulation
entries, the medium's size for floppy and hard-disk emulation.

Examples:
  diskcast iso boot debian.iso
  diskcast iso boot --output json --extract boot/ debian.iso
  diskcast iso boot installer.qcow2          # the disc may be inside any image format")]
    Boot(BootArgs),
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Save every boot image into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub extract: Option<PathBuf>,
    /// Format of the image holding the disc (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub open: OpenArgs,
    /// The disc (an .iso, or any image format holding one).
    pub file: PathBuf,
}

pub fn run(c: IsoCommand) -> Result<u8> {
    match c {
        IsoCommand::Boot(a) => boot(a),
    }
}

fn boot(a: BootArgs) -> Result<u8> {
    let images = Images::new(&a.open)?;
    let disk: std::sync::Arc<dyn BlockRead> = images.open(&a.file, a.format.as_deref())?.into();
    let named = |e: Error| if e.file().is_none() { e.with_file(&a.file) } else { e };
    let catalog = read_catalog(&disk).map_err(named)?;
    let hybrid = read_hybrid(disk.as_ref()).map_err(named)?;
    let entries = catalog.as_ref().map(|c| c.entries.as_slice()).unwrap_or(&[]);
    let mut saved = Vec::new();
    if let Some(dir) = &a.extract {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the directory", e).with_file(dir))?;
        for (i, e) in entries.iter().enumerate() {
            let path = dir.join(format!("eltorito_img{}_{}.img", i + 1, e.platform_name()));
            save(disk.as_ref(), e, &path).map_err(named)?;
            saved.push(path);
        }
    }
    if a.output == OutputFormat::Json {
        let entries: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["platform_name"] = json!(e.platform_name());
                if let Some(p) = saved.get(i) {
                    v["extracted"] = json!(p);
                }
                v
            })
            .collect();
        print_json(&json!({
            "catalog_lba": catalog.as_ref().map(|c| c.lba),
            "entries": entries,
            "hybrid": hybrid,
        }));
        return Ok(0);
    }
    match &catalog {
        None => println!("No El Torito boot catalog."),
        Some(c) => {
            println!("El Torito boot catalog at sector {}, {} entries", c.lba, c.entries.len());
            println!(
                "{:>3}  {:<8} {:<8} {:<13} {:>7} {:>7} {:>9} {:>11}  image",
                "#", "platform", "bootable", "emulation", "segment", "sectors", "lba", "size"
            );
            for (i, e) in c.entries.iter().enumerate() {
                println!(
                    "{:>3}  {:<8} {:<8} {:<13} {:>#7x} {:>7} {:>9} {:>11}  {}",
                    i + 1,
                    e.platform_name(),
                    if e.bootable { "yes" } else { "no" },
                    e.emulation,
                    e.load_segment,
                    e.sector_count,
                    e.lba,
                    e.size,
                    e.path.as_deref().unwrap_or("-")
                );
            }
        }
    }
    if hybrid.mbr || hybrid.gpt {
        let tables: Vec<&str> =
            [(hybrid.mbr, "MBR"), (hybrid.gpt, "GPT")].iter().filter(|t| t.0).map(|t| t.1).collect();
        println!("Hybrid system area: {} (the disc also boots written raw to a USB stick)", tables.join(" + "));
        for p in &hybrid.partitions {
            println!(
                "  {} {:>2}  type {:<38} start {:>12}  size {:>12}{}{}",
                p.table,
                p.number,
                p.kind,
                p.start,
                p.size,
                if p.bootable { "  active" } else { "" },
                if p.name.is_empty() { String::new() } else { format!("  {:?}", p.name) }
            );
        }
    } else {
        println!("No partition table in the system area (not a hybrid disc).");
    }
    for p in &saved {
        println!("saved {}", p.display());
    }
    Ok(0)
}

/// Copies one boot image out of the disc, in 1 MiB pieces.
fn save(disk: &dyn BlockRead, e: &BootEntry, path: &Path) -> Result<()> {
    use std::io::Write;
    let (mut off, len) = e.range();
    let end = off + len;
    let mut f = std::fs::File::create(path).map_err(|err| Error::io("cannot create", err).with_file(path))?;
    let mut buf = vec![0u8; 1 << 20];
    while off < end {
        let n = (end - off).min(buf.len() as u64) as usize;
        disk.read_at(&mut buf[..n], off)?;
        f.write_all(&buf[..n]).map_err(|err| Error::io("cannot write", err).with_file(path))?;
        off += n as u64;
    }
    Ok(())
}
