//! `diskcast usb ISO -o OUT`: a USB installer stick from an ISO, written in one pass into
//! any block format. [`diskcast_usb::plan`] decides the mode and lays out the stick; here
//! the arguments are checked, the output opened before the ISO is read, and the summary
//! printed.

use crate::cmd::write::{Confirm, DeviceTarget, is_device};
use crate::common::args::{OpenArgs, OutputFormat, ShareArgs, WriteArgs};
use crate::common::output::ImageWriter;
use crate::common::{Images, create_options, print_json};
use clap::Args;
use diskcast_block::provenance::Provenance;
use diskcast_block::size::{human, parse_size};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_usb::{BootReport, Layout, Mode, UsbOptions};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// Smallest `--wim-part-size`: a part holds at least one resource, and parts this small
/// are already only useful for tests.
const MIN_WIM_PART: u64 = 1 << 20;

#[derive(Debug, Args)]
pub struct UsbArgs {
    /// The ISO image (any block format diskcast reads: a plain .iso, qcow2...). Several
    /// ISOs make a multi-boot stick: each stored unchanged, booted from a GRUB menu.
    #[arg(value_name = "ISO", required = true)]
    pub isos: Vec<PathBuf>,
    /// The stick image to write, or a block device (a USB stick): then it is checked,
    /// shown, confirmed and verified as `diskcast write` does.
    #[arg(short = 'o', long = "out", value_name = "OUT")]
    pub out: PathBuf,
    /// OUT is a device: write without asking (without a terminal to ask on, refused).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// OUT is a device: do not read it back and compare after writing.
    #[arg(long = "no-verify")]
    pub no_verify: bool,
    /// auto (dd for a hybrid ISO, else fat32), dd (the ISO copied as it is) or fat32
    /// (a GPT disk with the ISO's files on FAT32, Rufus's "ISO mode").
    #[arg(long = "mode", id = "usb_mode", value_name = "auto|dd|fat32", default_value = "auto")]
    pub usb_mode: String,
    /// fat32: everything on FAT32 (a Windows install.wim over 4 GiB split into .swm
    /// parts); exfat: a FAT32 boot partition plus an exFAT partition holding every file.
    #[arg(long = "windows-layout", value_name = "fat32|exfat", default_value = "fat32")]
    pub windows_layout: String,
    /// Label of the FAT (and exFAT) partition; default: the ISO's volume id, cut to 11
    /// characters FAT takes.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Size of the stick (K, M, G); default: the content plus slack. A size too small is
    /// refused before anything is written.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Add an ext4 partition of SIZE labelled `persistence` holding persistence.conf
    /// (`/ union`), for Debian and Ubuntu live systems (boot them with `persistence`).
    #[arg(long, value_name = "SIZE")]
    pub persistence: Option<String>,
    /// Split a WIM under sources/ larger than SIZE into .swm parts of at most SIZE
    /// (default 3800M, as Microsoft splits; 1M to 4G-1). WIMs over 4 GiB - 1 are always
    /// split in the fat32 layout.
    #[arg(long = "wim-part-size", value_name = "SIZE")]
    pub wim_part_size: Option<String>,
    /// Several ISOs: the menu entry booted without input, 1-based in the order the ISOs
    /// are given (default 1).
    #[arg(long = "default", value_name = "N")]
    pub default_entry: Option<usize>,
    /// Several ISOs: seconds the menu waits before booting the default entry (default 10).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Several ISOs: the data partition holding them: auto (FAT32 when every ISO is under
    /// 4 GiB, else exFAT), fat32 or exfat.
    #[arg(long = "data-fs", value_name = "auto|fat32|exfat")]
    pub data_fs: Option<String>,
    /// Block format of OUT (raw, qcow2, vmdk, vhd, vhdx, vdi).
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// Format options of OUT, comma separated (`diskcast formats` lists them).
    #[arg(long = "format-options", value_name = "KEY=VALUE,..")]
    pub format_options: Vec<String>,
    /// Block format of the ISO (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// The summary: human text on stderr, or JSON on stdout (mode, partitions, boot).
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub share: ShareArgs,
    #[command(flatten)]
    pub write: WriteArgs,
}

fn boot_line(firmware: &str, r: &BootReport) -> String {
    if r.bootable {
        format!("{firmware} boots {}", r.how)
    } else {
        format!("{firmware} boot is not possible: {}", r.how)
    }
}

/// Several ISOs make a multi-boot stick; these options are for one ISO only.
fn check_multi_args(a: &UsbArgs) -> Result<()> {
    let single_only = [
        (a.usb_mode != "auto", "--mode"),
        (a.windows_layout != "fat32", "--windows-layout"),
        (a.persistence.is_some(), "--persistence"),
        (a.wim_part_size.is_some(), "--wim-part-size"),
    ];
    if let Some((_, flag)) = single_only.iter().find(|(given, _)| *given) {
        return Err(Error::argument(format!(
            "{flag} is for a stick made from one ISO; {} ISOs make a multi-boot stick (GPT, a GRUB boot partition, \
             a data partition holding the ISOs)",
            a.isos.len()
        )));
    }
    Ok(())
}

pub fn run(a: UsbArgs) -> Result<u8> {
    let multi = a.isos.len() > 1;
    if multi {
        check_multi_args(&a)?;
    } else if let Some(flag) = [
        (a.default_entry.is_some(), "--default"),
        (a.timeout.is_some(), "--timeout"),
        (a.data_fs.is_some(), "--data-fs"),
    ]
    .iter()
    .find_map(|(given, flag)| given.then_some(flag))
    {
        return Err(Error::argument(format!(
            "{flag} is for a multi-boot stick (several ISOs); a stick from one ISO boots that ISO's own menu"
        )));
    }
    let data_fs = diskcast_usb::multi::DataFs::parse(a.data_fs.as_deref().unwrap_or("auto"))?;
    let mode = Mode::parse(&a.usb_mode)?;
    let layout = match a.windows_layout.as_str() {
        "fat32" => Layout::Fat32,
        "exfat" => Layout::Exfat,
        other => return Err(Error::argument(format!("--windows-layout {other:?}: expected fat32 or exfat"))),
    };
    if mode == Mode::Dd && layout == Layout::Exfat {
        return Err(Error::argument("--windows-layout exfat lays out files; --mode dd copies the ISO as it is"));
    }
    let size = a.size.as_deref().map(parse_size).transpose()?;
    let persistence = a.persistence.as_deref().map(parse_size).transpose()?;
    let wim_part_size = match a.wim_part_size.as_deref().map(parse_size).transpose()? {
        None => diskcast_usb::WIM_PART_LIMIT,
        Some(s) if (MIN_WIM_PART..=diskcast_usb::FAT_MAX_FILE).contains(&s) => s,
        Some(s) => {
            return Err(Error::argument(format!(
                "--wim-part-size {}: a part must be 1 MiB to 4 GiB - 1 (FAT's largest file)",
                human(s)
            )));
        }
    };
    let target = if is_device(&a.out) {
        if a.output_format != "raw" || !a.format_options.is_empty() || a.write.compress {
            return Err(Error::argument(format!(
                "{} is a block device: it holds the stick itself (raw); -O, --format-options and -c are for \
                 image files",
                a.out.display()
            )));
        }
        let sources: Vec<&std::path::Path> = a.isos.iter().map(PathBuf::as_path).collect();
        Target::Device(DeviceTarget::open(&a.out, &sources, &a.write)?)
    } else {
        let create = create_options(&a.format_options, a.write.compress)?;
        Target::File(ImageWriter::open(&a.out, &a.isos, &a.output_format, create, &a.write)?)
    };
    let images = Images::new(&OpenArgs { share: a.share, ..OpenArgs::default() })?;
    let prov = Provenance::from_env()?;
    let names: Vec<String> = a.isos.iter().map(|i| i.display().to_string()).collect();
    let name = names.join(", ");
    let stick = if multi {
        let mut inputs = Vec::new();
        for iso in &a.isos {
            let disc: Arc<dyn BlockRead> = Arc::from(images.open(iso, a.format.as_deref())?);
            let file_name = iso.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            inputs.push(diskcast_usb::multi::IsoInput { disc, name: iso.display().to_string(), file_name });
        }
        let opts = diskcast_usb::multi::MultiOptions {
            label: a.label.clone(),
            size,
            default: a.default_entry.unwrap_or(1),
            timeout: a.timeout.unwrap_or(10),
            data_fs,
            bios_grub: true,
        };
        let seed = format!("usb multi {names:?} {:?} {:?} {:?}", a.size, a.label, a.data_fs);
        diskcast_usb::multi::plan(inputs, &opts, &prov, &seed)?
    } else {
        let disc: Arc<dyn BlockRead> = Arc::from(images.open(&a.isos[0], a.format.as_deref())?);
        let opts = UsbOptions {
            mode,
            layout,
            label: a.label.clone(),
            size,
            persistence,
            split_wim: Some(diskcast_wim::split_in_tree),
            wim_part_size,
            bios_grub: true,
        };
        let seed = format!("usb {name} {:?} {:?} {:?} {:?}", a.usb_mode, a.windows_layout, a.size, a.persistence);
        diskcast_usb::plan(disc, &name, &opts, &prov, &seed)?
    };
    eprintln!("diskcast: mode {}: {}", stick.mode.name(), stick.why);
    for n in &stick.notes {
        eprintln!("diskcast: {n}");
    }
    for m in &stick.menu {
        eprintln!("diskcast: menu entry {}: {}, kernel and arguments from {}", m.title, m.path, m.from);
    }
    for (fw, r) in [("UEFI", &stick.uefi), ("BIOS", &stick.bios)] {
        eprintln!("diskcast: {}", boot_line(fw, r));
    }
    if !stick.uefi.bootable && !stick.bios.bootable {
        eprintln!("diskcast: warning: no firmware boots this stick; it holds the ISO's files only");
    }
    match target {
        Target::File(writer) => writer.write(&stick.image)?,
        Target::Device(device) => {
            let what = format!("stick from {name} ({} mode)", stick.mode.name());
            let confirm = Confirm { yes: a.yes, verify: !a.no_verify };
            device.write(&stick.image, &what, &confirm, &images)?
        }
    }
    let disk_size = stick.image.size();
    match a.output {
        OutputFormat::Human => {
            eprintln!("diskcast: wrote {} ({} {})", a.out.display(), human(disk_size), a.output_format);
            for p in &stick.partitions {
                eprintln!("  {} {:<11} {:>9} at {:>9}  {}", p.number, p.name, human(p.size), human(p.start), p.content);
            }
        }
        OutputFormat::Json => print_json(&json!({
            "output": a.out.display().to_string(),
            "format": a.output_format,
            "iso": name,
            "mode": stick.mode,
            "why": stick.why,
            "virtual-size": disk_size,
            "partitions": stick.partitions,
            "files": stick.files,
            "uefi": stick.uefi,
            "bios": stick.bios,
            "notes": stick.notes,
            "menu": stick.menu,
        })),
    }
    Ok(0)
}

/// Where the stick goes: a new image file, or a device written as `diskcast write` does.
enum Target {
    File(ImageWriter),
    Device(DeviceTarget),
}
