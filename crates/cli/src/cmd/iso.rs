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
    /// Create an ISO 9660 disc (Rock Ridge + Joliet) from a directory, tar or any tree
    /// diskcast reads, optionally bootable on BIOS and UEFI.
    #[command(after_help = "\
SRC is anything `diskcast ls` reads: a directory, a tar, a disk image's filesystem, an ISO.
Boot images are paths inside SRC, as xorriso's -b and -e take them: --boot-bios names a
no-emulation image (isolinux/isolinux.bin; its boot info table is filled in), --boot-uefi
a FAT image holding EFI/BOOT/BOOTX64.EFI. --hybrid adds a protective MBR and a GPT whose
EFI System Partition is that image, so the disc written raw to a USB stick boots on UEFI.
With SOURCE_DATE_EPOCH set the output is byte-for-byte reproducible.

Examples:
  diskcast iso create ./root -o data.iso -V DATA
  diskcast iso create ./stage -o boot.iso --boot-bios isolinux/isolinux.bin \\
      --boot-uefi boot/efiboot.img --hybrid
  diskcast iso create rootfs.tar.gz -o rootfs.iso -O qcow2")]
    Create(CreateIsoArgs),
}

#[derive(Debug, Args)]
pub struct CreateIsoArgs {
    /// The tree to put on the disc.
    pub src: String,
    /// The disc image to write.
    #[arg(short = 'o', long = "output", value_name = "OUT.iso")]
    pub output: PathBuf,
    /// Volume label.
    #[arg(short = 'V', long = "label", default_value = "CDROM")]
    pub label: String,
    /// Path in SRC of a no-emulation BIOS boot image (isolinux.bin).
    #[arg(long = "boot-bios", value_name = "PATH")]
    pub boot_bios: Option<String>,
    /// Path in SRC of an EFI System Partition image (the UEFI El Torito entry).
    #[arg(long = "boot-uefi", value_name = "PATH")]
    pub boot_uefi: Option<String>,
    /// A GPT in the system area naming the UEFI image, for USB sticks.
    #[arg(long)]
    pub hybrid: bool,
    /// Leave out Rock Ridge (Unix names, modes, symlinks).
    #[arg(long = "no-rock-ridge")]
    pub no_rock_ridge: bool,
    /// Leave out the Joliet tree.
    #[arg(long = "no-joliet")]
    pub no_joliet: bool,
    /// Block format of the output (raw by default; any `diskcast formats` writes).
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    #[command(flatten)]
    pub source: super::tree_source::SourceArgs,
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
        IsoCommand::Create(a) => create(a),
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

fn create(a: CreateIsoArgs) -> Result<u8> {
    use diskcast_block::copy::{CopyOptions, copy};
    use diskcast_block::output::OutputFiles;
    use diskcast_block::progress::NoProgress;
    use diskcast_block::registry::CreateOptions;
    use diskcast_block::{BlockWrite, ResultExt};
    use diskcast_iso9660::write::{IsoOptions, plan_iso};
    let registry = diskcast_formats::registry();
    let driver = registry.get(&a.output_format)?;
    let provenance = diskcast_block::provenance::Provenance::from_env()?;
    let opened = super::tree_source::open(&a.src, &a.source)?;
    let opts = IsoOptions {
        label: a.label.clone(),
        rock_ridge: !a.no_rock_ridge,
        joliet: !a.no_joliet,
        now: i64::try_from(provenance.now()).unwrap_or(i64::MAX),
        boot_bios: a.boot_bios.clone(),
        boot_uefi: a.boot_uefi.clone(),
        hybrid: a.hybrid,
    };
    let built = plan_iso(&opened.tree, &opts)?;
    for w in &built.warnings {
        eprintln!("diskcast: warning: {w}");
    }
    let _lock = super::lock_target(&a.output)?;
    let out = OutputFiles::new();
    let image = built.image;
    let create = CreateOptions { provenance, ..CreateOptions::default() };
    let dst: Box<dyn BlockWrite> = driver.create(&a.output, image.size(), &create, &out).file(&a.output)?;
    copy(&image, dst.as_ref(), &CopyOptions::default(), &NoProgress).file(&a.output)?;
    dst.finish().file(&a.output)?;
    out.commit()?;
    Ok(0)
}
