//! `diskcast iso`: El Torito boot catalogs and hybrid system areas of optical discs.

use crate::common::args::{OpenArgs, OutputFormat, SourceArgs, WriteArgs, out_path};
use crate::common::output::{ImageWriter, interrupt_flag};
use crate::common::tree_source::{input_path, open as open_source};
use crate::common::{Images, create_options, print_json, threads};
use clap::{Args, Subcommand};
use diskcast_block::size::count;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_iso9660::eltorito::{BootEntry, read_catalog};
use diskcast_iso9660::hybrid::read_hybrid;
use diskcast_tree::{BuildOptions, FsBuilder};
use serde_json::json;
use std::path::{Path, PathBuf};

// Parsed once per run: the size of `iso create`'s arguments (SourceArgs) costs nothing.
#[allow(clippy::large_enum_variant)]
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
no-emulation image (isolinux/isolinux.bin) of which the BIOS loads --boot-load-size
sectors of 512 bytes (4 by default, as isolinux and GRUB want) and into which a boot info
table is patched (bytes 8-63, as mkisofs -boot-info-table; --no-boot-info-table leaves the
image as it is, for loaders that do not expect one), --boot-uefi
a FAT image holding EFI/BOOT/BOOTX64.EFI. --hybrid adds a protective MBR and a GPT whose
EFI System Partition is that image, so the disc written raw to a USB stick boots on UEFI;
when the BIOS image is isolinux.bin, the MBR also gets isolinux's isohybrid boot code
(/usr/lib/ISOLINUX/isohdpfx.bin from the isolinux package, or --hybrid-mbr PATH), so the
stick boots on BIOS too. --hybrid with only --boot-bios writes isohybrid's plain MBR.
With SOURCE_DATE_EPOCH set the output is byte-for-byte reproducible.

Examples:
  diskcast iso create ./root -o data.iso -V DATA
  diskcast iso create ./stage -o boot.iso --boot-bios isolinux/isolinux.bin \\
      --boot-uefi boot/efiboot.img --hybrid
  diskcast iso create rootfs.tar.gz -o rootfs.iso -O qcow2
  diskcast iso create ./stage -o raw.iso --boot-bios boot/loader.bin --no-boot-info-table \
      --boot-load-size 8")]
    Create(CreateIsoArgs),
    /// Rebuild a disc with files added and removed, keeping its label and boot setup.
    #[command(after_help = "\
The disc's best tree (Rock Ridge, else Joliet or plain names; a UDF bridge disc's UDF
tree) is read, every --remove PATH is taken out, then every --add DIR is merged in (DIR's
contents go to the root, or below DEST with --add DIR=DEST; added files replace existing
ones).

The result boots as the input did. Kept: every El Torito entry (emulation, load size, a
boot info table and GRUB 2's boot info only where the input's image had them), the
system area byte for byte (MBR boot code, MBR and GPT entries), and partitions appended
after the ISO data (an EFI System Partition, as memtest86+ and Ubuntu discs carry),
copied after the new data. Re-pointed: the MBR code's pointer at the BIOS image, entries
over the disc, over a boot image or an appended partition, the backup GPT. Refused before
anything is written, naming the reason: partitions inside the ISO data at no file, a
second superblock (xorriso -partition_offset), logical partitions, system-area data that
is neither an MBR nor a GPT, boot images that are neither files nor appended.

Example:
  diskcast iso remaster debian.iso --add preseed/ --remove /README.txt -o custom.iso")]
    Remaster(RemasterArgs),
}

#[derive(Debug, Args)]
pub struct RemasterArgs {
    /// The disc to start from.
    pub input: PathBuf,
    /// A directory whose contents are added (DIR, or DIR=DEST to add below DEST).
    #[arg(long = "add", value_name = "DIR[=DEST]")]
    pub add: Vec<String>,
    /// A path to take out of the disc (directories with everything below them).
    #[arg(long = "remove", value_name = "PATH")]
    pub remove: Vec<String>,
    /// The new disc.
    #[arg(short = 'o', long = "out", alias = "output", value_name = "OUT.iso", value_parser = out_path)]
    pub output: PathBuf,
    /// Block format of the input (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, Args)]
pub struct CreateIsoArgs {
    /// The tree to put on the disc.
    pub src: String,
    /// The disc image to write.
    #[arg(short = 'o', long = "out", alias = "output", value_name = "OUT.iso", value_parser = out_path)]
    pub output: PathBuf,
    /// Volume label.
    #[arg(short = 'V', long = "label", default_value = "CDROM")]
    pub label: String,
    /// Path in SRC of a no-emulation BIOS boot image (isolinux.bin).
    #[arg(long = "boot-bios", value_name = "PATH")]
    pub boot_bios: Option<String>,
    /// Patch a boot info table into the BIOS image (the default; mkisofs -boot-info-table).
    #[arg(long = "boot-info-table", overrides_with = "no_boot_info_table")]
    pub boot_info_table: bool,
    /// Leave the BIOS image's bytes as they are (GRUB's and isolinux's images want the
    /// table; other loaders may hold code or data at bytes 8-63).
    #[arg(long = "no-boot-info-table", overrides_with = "boot_info_table")]
    pub no_boot_info_table: bool,
    /// 512-byte sectors of the BIOS image the firmware loads (mkisofs -boot-load-size;
    /// default 4, what isolinux and GRUB expect: they load the rest themselves).
    #[arg(long = "boot-load-size", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub boot_load_size: Option<u16>,
    /// Path in SRC of an EFI System Partition image (the UEFI El Torito entry).
    #[arg(long = "boot-uefi", value_name = "PATH")]
    pub boot_uefi: Option<String>,
    /// A GPT in the system area naming the UEFI image, and isolinux's MBR boot code when
    /// the BIOS image is isolinux.bin, for USB sticks.
    #[arg(long)]
    pub hybrid: bool,
    /// MBR boot code for --hybrid (first 432 bytes used; default: the isolinux package's
    /// /usr/lib/ISOLINUX/isohdpfx.bin when the BIOS image is isolinux.bin).
    #[arg(long = "hybrid-mbr", value_name = "PATH")]
    pub hybrid_mbr: Option<PathBuf>,
    /// Leave out Rock Ridge (Unix names, modes, symlinks).
    #[arg(long = "no-rock-ridge")]
    pub no_rock_ridge: bool,
    /// Leave out the Joliet tree.
    #[arg(long = "no-joliet")]
    pub no_joliet: bool,
    /// Add a UDF 1.02 file system sharing the file data (a UDF bridge disc, as on
    /// Windows installation media).
    #[arg(long)]
    pub udf: bool,
    /// Block format of the output (raw by default; any `diskcast formats` writes).
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Save every boot image into this directory (new or empty; created if missing).
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
        IsoCommand::Remaster(a) => remaster(a),
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
        saved = save_boot_images(&disk, entries, dir)?;
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
            println!("El Torito boot catalog at sector {}, {}", c.lba, count(c.entries.len(), "entry", "entries"));
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

/// Saves every boot image into DIR through the one extraction path (`diskcast_host::extract`):
/// DIR is opened once without following a symlink and must be new or empty, and each
/// image is created beneath it, so a neighbour who can write into DIR redirects nothing.
/// The images stay references into the disc until they are written.
fn save_boot_images(disk: &std::sync::Arc<dyn BlockRead>, entries: &[BootEntry], dir: &Path) -> Result<Vec<PathBuf>> {
    use diskcast_tree::{FileData, FileExtent, Kind, Meta, Node, NodeId, Timestamp, Tree};
    let mut tree = Tree::new(Meta::new(0o755, Timestamp::default()));
    let mut names = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let name = format!("eltorito_img{}_{}.img", i + 1, e.platform_name());
        let (offset, len) = e.range();
        let extents =
            if len == 0 { Vec::new() } else { vec![FileExtent { file_offset: 0, source_offset: offset, len }] };
        let data = FileData::blocks(len, disk.clone(), extents)?;
        tree.insert(
            NodeId::ROOT,
            name.as_bytes(),
            Node::new(Meta::new(0o644, Timestamp::default()), Kind::File(data)),
        )?;
        names.push(dir.join(name));
    }
    let report = diskcast_host::extract(
        &tree,
        dir,
        &diskcast_host::ExtractOptions {
            cancel: Some(interrupt_flag()?),
            ..diskcast_host::ExtractOptions::new(threads(None)?)
        },
        &diskcast_block::progress::NoProgress,
    )?;
    if let Some(first) = report.failed.first() {
        return Err(Error::new(diskcast_block::ErrorKind::Io, format!("boot image not saved: {first}")).with_file(dir));
    }
    Ok(names)
}

fn create(a: CreateIsoArgs) -> Result<u8> {
    use diskcast_iso9660::write::IsoOptions;
    if a.hybrid_mbr.is_some() && !(a.hybrid && a.boot_bios.is_some()) {
        return Err(Error::argument("--hybrid-mbr needs --hybrid and --boot-bios"));
    }
    if a.boot_bios.is_none() && (a.no_boot_info_table || a.boot_info_table || a.boot_load_size.is_some()) {
        return Err(Error::argument("--boot-info-table, --no-boot-info-table and --boot-load-size need --boot-bios"));
    }
    // The output is checked (and locked) before the source is read.
    let mut inputs: Vec<PathBuf> = input_path(&a.src).into_iter().collect();
    inputs.extend(a.hybrid_mbr.clone());
    let writer = iso_writer(&a.output, &a.output_format, &a.write, &inputs)?;
    let provenance = diskcast_block::provenance::Provenance::from_env()?;
    let opened = open_source(&a.src, &a.source, writer.threads())?;
    let hybrid_mbr = match (&a.boot_bios, a.hybrid) {
        (Some(bios), true) => hybrid_mbr_code(&opened.tree, bios, a.hybrid_mbr.as_deref(), a.boot_uefi.is_some())?,
        _ => None,
    };
    let opts = IsoOptions {
        rock_ridge: !a.no_rock_ridge,
        joliet: !a.no_joliet,
        boot_bios: a.boot_bios.clone(),
        boot_info_table: !a.no_boot_info_table,
        boot_load_size: a.boot_load_size.unwrap_or(4),
        boot_uefi: a.boot_uefi.clone(),
        hybrid: a.hybrid,
        hybrid_mbr,
        udf: a.udf,
        keep: None,
    };
    write_iso(&opened.tree, opts, iso_build_options(a.label.clone(), &provenance), writer)
}

/// Where Debian's isolinux package puts isohybrid's MBR code.
const ISOHDPFX: &str = "/usr/lib/ISOLINUX/isohdpfx.bin";

/// The MBR code for `--hybrid` with BIOS image `bios`: `--hybrid-mbr`'s file, else the
/// host's isohdpfx.bin when the image is isolinux.bin (an error naming the package when
/// missing), else none (with a warning when the disc still boots on UEFI from USB).
fn hybrid_mbr_code(
    tree: &diskcast_tree::Tree,
    bios: &str,
    given: Option<&Path>,
    uefi: bool,
) -> Result<Option<Vec<u8>>> {
    let read_code = |p: &Path, hint: &str| -> Result<Vec<u8>> {
        let mut b = std::fs::read(p)
            .map_err(|e| Error::io(format!("cannot read the hybrid MBR code{hint}"), e).with_file(p))?;
        if b.is_empty() || b.len() > 512 {
            return Err(Error::invalid(format!("{} bytes of MBR code; expected 1 to 512", b.len())).with_file(p));
        }
        b.truncate(diskcast_iso9660::write::HYBRID_MBR_CODE);
        Ok(b)
    };
    if let Some(p) = given {
        return read_code(p, "").map(Some);
    }
    if boot_image_is_isolinux(tree, bios)? {
        return read_code(Path::new(ISOHDPFX), "; install the isolinux package or pass --hybrid-mbr PATH").map(Some);
    }
    if uefi {
        eprintln!(
            "diskcast: warning: --boot-bios {bios} is not isolinux.bin: the USB stick boots on UEFI only (--hybrid-mbr PATH adds MBR code)"
        );
    }
    Ok(None)
}

/// True when the tree's file `path` is an isolinux.bin with the isohybrid entry point. A
/// missing image is false here; the planner reports it, naming the option.
fn boot_image_is_isolinux(tree: &diskcast_tree::Tree, path: &str) -> Result<bool> {
    match tree.resolve(path.as_bytes(), true).ok().and_then(|id| tree.node(id).as_file()) {
        Some(f) if f.size >= 0x44 => {
            let mut head = [0u8; 0x44];
            f.read_at(&mut head, 0)?;
            Ok(diskcast_iso9660::write::is_isohybrid_capable(&head))
        }
        _ => Ok(false),
    }
}

/// The disc's output, checked and locked before anything is read: the one
/// [`ImageWriter`] every image command writes through.
fn iso_writer(output: &Path, format: &str, write: &WriteArgs, inputs: &[PathBuf]) -> Result<ImageWriter> {
    ImageWriter::open(output, inputs, format, create_options(&[], write.compress)?, write)
}

/// The label and the time a disc records, as every filesystem builder takes them.
fn iso_build_options(label: String, provenance: &diskcast_block::provenance::Provenance) -> BuildOptions {
    BuildOptions {
        label: Some(label),
        now: i64::try_from(provenance.now()).unwrap_or(i64::MAX),
        ..BuildOptions::default()
    }
}

/// Plans the disc with the ISO builder and writes it through `writer`.
fn write_iso(
    tree: &diskcast_tree::Tree,
    disc: diskcast_iso9660::write::IsoOptions,
    opts: BuildOptions,
    writer: ImageWriter,
) -> Result<u8> {
    let built = diskcast_iso9660::write::IsoBuilder::new(disc).plan(tree, &opts)?;
    for w in &built.warnings {
        eprintln!("diskcast: warning: {w}");
    }
    writer.write(&built.image)?;
    Ok(0)
}

fn remaster(a: RemasterArgs) -> Result<u8> {
    use diskcast_iso9660::write::IsoOptions;
    use diskcast_tree::{FsReader, ReadOptions};
    let mut inputs = vec![a.input.clone()];
    inputs.extend(a.add.iter().map(|spec| PathBuf::from(spec.split_once('=').map_or(spec.as_str(), |(dir, _)| dir))));
    let writer = iso_writer(&a.output, "raw", &a.write, &inputs)?;
    let images = Images::new(&OpenArgs::default())?;
    let disk: std::sync::Arc<dyn BlockRead> = images.open(&a.input, a.format.as_deref())?.into();
    let named = |e: Error| if e.file().is_none() { e.with_file(&a.input) } else { e };
    let vols = diskcast_iso9660::read_volumes(disk.as_ref()).map_err(named)?;
    // The tree the boot images are named in: the best ISO 9660 one, never UDF.
    let kinds = diskcast_iso9660::available_trees(disk.as_ref()).map_err(named)?;
    let kind = kinds.iter().find(|k| **k != diskcast_iso9660::TreeKind::Udf).copied();
    // A UDF bridge disc (Windows installation media) keeps its UDF side, read from the
    // UDF tree: the ISO 9660 side of those often holds only a README.
    let udf = kinds.contains(&diskcast_iso9660::TreeKind::Udf);
    let read_kind = if udf { Some(diskcast_iso9660::TreeKind::Udf) } else { kind };
    let ropts = ReadOptions { tree: read_kind.map(|k| k.name().to_string()), label: a.input.display().to_string() };
    let mut tree = diskcast_iso9660::Iso9660Reader.read(disk.clone(), &ropts)?;
    // The system area (MBR code, MBR and GPT entries), the El Torito entries and
    // partitions appended after the ISO 9660 data are kept, re-pointed at where their
    // images land; what cannot be re-pointed is refused here, before anything is written.
    let catalog = read_catalog(&disk).map_err(named)?;
    let keep = diskcast_iso9660::hybrid::Kept::read(&disk, catalog.as_ref()).map_err(named)?;
    for p in &a.remove {
        tree.remove(p.as_bytes()).map_err(|e| match e.kind() {
            diskcast_tree::TreeErrorKind::IsRoot => Error::argument("--remove /: the root cannot be removed"),
            _ => Error::argument(format!("--remove {p}: {}", e.message())),
        })?;
    }
    for spec in &a.add {
        let (dir, dest) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
        let src = diskcast_host::read_dir(Path::new(dir), &diskcast_host::DirOptions::default())?;
        let meta = tree.node(tree.root()).meta.clone();
        tree.create_dir_all(dest.as_bytes(), &meta)?;
        tree.graft(dest.as_bytes(), &src)?;
    }
    let opts = IsoOptions {
        rock_ridge: kind == Some(diskcast_iso9660::TreeKind::RockRidge),
        joliet: true,
        hybrid: false,
        hybrid_mbr: None,
        boot_bios: None,
        boot_info_table: false,
        boot_load_size: 4,
        boot_uefi: None,
        udf,
        keep: Some(keep),
    };
    let provenance = diskcast_block::provenance::Provenance::from_env()?;
    write_iso(&tree, opts, iso_build_options(vols.volume_id.clone(), &provenance), writer)
}
