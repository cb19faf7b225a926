//! What the command line says, as clap parses it. Validation into plans happens in `cmd/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The top-level examples; `main` appends the list of formats from the registry.
pub const EXAMPLES: &str = "\
Examples:
  diskcast info disk.qcow2
  diskcast convert -p -O qcow2 -c -o compression_type=zstd disk.raw disk.qcow2
  diskcast convert -O raw disk.qcow2 - | gzip > disk.raw.gz
  diskcast compare disk.raw disk.qcow2
  diskcast create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2";

/// Convert between disk, VM, optical and container images.
#[derive(Debug, Parser)]
#[command(name = "diskcast", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show an image's format, sizes, cluster size, compression and backing chain.
    #[command(
        after_help = "Examples:\n  diskcast info disk.qcow2\n  diskcast info --backing-chain --output json overlay.qcow2 | jq '.\"backing-chain\"'"
    )]
    Info(InfoArgs),
    /// Convert an image to another format (or the same one, compacted).
    #[command(after_help = "\
Examples:
  diskcast convert -O qcow2 disk.raw disk.qcow2              # sparse qcow2, all cores
  diskcast convert -p -c -O qcow2 -o compression_type=zstd disk.raw small.qcow2
  diskcast convert -O qcow2 -o compat=0.10,cluster_size=2M disk.img old-qemu.qcow2
  diskcast convert -O raw overlay.qcow2 flat.raw             # flattens the backing chain
  diskcast convert -O raw disk.qcow2 - | ssh host 'dd of=/dev/sdb bs=4M'
  diskcast convert -O vmdk -o subformat=streamOptimized disk.qcow2 disk.vmdk   # OVA/vSphere
  diskcast convert -O vmdk -o subformat=streamOptimized disk.qcow2 - | curl -T - URL
  diskcast convert -O vhd -o subformat=fixed,force_size=on,round_size=1M disk.qcow2 azure.vhd
  diskcast convert --profile azure disk.qcow2 azure.vhd      # the same
  diskcast convert --profile kubevirt disk.raw oci:./vm-disk:latest   # a containerDisk
  diskcast convert -O vhdx disk.vmdk disk.vhdx                 # VMware -> Hyper-V
  diskcast convert -O vdi disk.vhdx disk.vdi                   # Hyper-V -> VirtualBox
  diskcast convert -n -O raw disk.qcow2 /dev/vg0/vm-disk        # into an existing LV or disk
  zcat disk.raw.gz | diskcast convert -f raw -O qcow2 - disk.qcow2   # a pipe is a raw disk

Formats: raw, qcow2, vmdk, vhd (also called vpc), vhdx, vdi; `diskcast formats` lists
each one's -o options. DST `-` is standard output, for raw and streamOptimized VMDK.
SRC `-` (or a pipe, or a character device) is read whole into an unnamed temporary file
first, so every target format works; it is a raw disk (a piped image of another format
is refused: save it to a file). A block device is read and written at its full size.
Images in use by qemu (a running VM) are refused; -U reads a source anyway.

The output is written as an unnamed file beside DST and linked into place only when
everything succeeded; on an error, Ctrl-C or kill no file is left. An existing DST that
a VM or another tool has open is refused, never replaced. DST /dev/null, /dev/stdout, a
pipe or another character device is written in place, front to back (raw or
streamOptimized VMDK); a block device only with -n, and only when nothing uses it (not
mounted, no mounted partition, not swap, dm or RAID, not the running system's, large
enough).")]
    Convert(ConvertArgs),
    /// Compare the guest-visible content of two images (exit 0 same, 1 different, 2 error).
    #[command(after_help = "\
Only content counts, not format or allocation: a raw file and a qcow2 holding the same
bytes are identical. When the sizes differ, the extra part of the larger image must read
as zeros. The first differing offset is printed.

Example:
  diskcast compare disk.raw disk.qcow2 && echo same")]
    Compare(CompareArgs),
    /// Check an image's metadata for corruption and leaked clusters.
    #[command(after_help = "\
Exit status, as qemu-img check: 0 no problems, 1 the check could not finish,
2 corruptions found, 3 only leaked clusters found, 63 the format has no check.

With --profile P: whether platform P would take FILE, and if not, why (one reason per
line, `--output json` an array of {code, message}). Exit status 0 accepted, 4 rejected,
1 the image could not be read. Profiles: azure (fixed VHD, N MiB + footer), esxi and aws
(streamOptimized VMDK), hyperv (VHDX, GPT, ESP with EFI/BOOT/BOOTX64.EFI), kubevirt (a
containerDisk image: qcow2 or raw under /disk/), qemu (qcow2 v3, zstd). Every disk also
needs a partition table, a UEFI loader or MBR boot code, and a clean format check.

Examples:
  diskcast check --output json disk.qcow2
  diskcast check --profile azure disk.vhd
  diskcast check --profile kubevirt --output json oci:./vm-image:latest")]
    Check(crate::cmd::CheckArgs),
    /// Show which ranges of an image hold data, zeros, or nothing.
    #[command(after_help = "\
Each range is data (stored), zero (reads as zeros, stored as such), unallocated, or
comes from a backing file (depth says how far down the chain).

Example:
  diskcast map --output json disk.qcow2")]
    Map(ImageArgs),
    /// Create a new, empty image.
    #[command(after_help = "\
SIZE takes K, M, G, T suffixes (powers of 1024). With -b, SIZE may be left out and the
backing file's size is used; the backing name is stored as given, relative names
resolve against the new image's directory. Reading the new image later opens a backing
file outside its directory only with --allow-backing PATH.

Examples:
  diskcast create -f qcow2 disk.qcow2 20G
  diskcast create -f qcow2 -o cluster_size=2M,compat=0.10 big.qcow2 1T
  diskcast create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2")]
    Create(CreateArgs),
    /// List the formats and the `-o` options each one takes.
    #[command(after_help = "Example:\n  diskcast formats\n  diskcast formats --output json")]
    Formats(FormatsArgs),
    /// Say how large an image would be after converting to a format.
    #[command(after_help = "\
Examples:
  diskcast measure -O qcow2 disk.raw
  diskcast measure -O qcow2 --size 100G --output json")]
    Measure(MeasureArgs),
    /// Optical discs: show and extract El Torito boot images.
    #[command(subcommand)]
    Iso(crate::cmd::iso::IsoCommand),
    /// List the files of a directory, tar or disk image's filesystem (like ls).
    #[command(after_help = LS_HELP)]
    Ls(crate::cmd::LsArgs),
    /// Print one file of a directory, tar or disk image's filesystem.
    #[command(after_help = CAT_HELP)]
    Cat(crate::cmd::CatArgs),
    /// Extract a tree into a directory (safely), or write it as a tar.
    #[command(after_help = EXTRACT_HELP)]
    Extract(crate::cmd::ExtractArgs),
    /// Container images: inspect an OCI or Docker image.
    #[command(subcommand)]
    Oci(crate::cmd::oci::OciCommand),
    /// Build a filesystem image (FAT32, FAT16, ext4) from a tree, in any block format.
    #[command(after_help = MKFS_HELP)]
    Mkfs(crate::cmd::MkfsArgs),
    /// Build a partitioned disk (GPT or MBR) with filesystems from trees, in one pass.
    #[command(after_help = MKDISK_HELP)]
    Mkdisk(crate::cmd::MkdiskArgs),
    /// Make a container image or root filesystem a bootable VM disk, in any format.
    #[command(after_help = VM_HELP)]
    Vm(crate::cmd::VmArgs),
}

const VM_HELP: &str = "\
Examples:
  diskcast vm oci:./image:latest -o vm.qcow2 -O qcow2          # kernel from the image
  diskcast vm docker://docker.io/library/debian:12 -o vm.vhd --profile azure \\
      --kernel /boot/vmlinuz-6.1.0-27-cloud-amd64
  diskcast vm rootfs.tar -o vm.vmdk --profile esxi --cmdline 'init=/sbin/myinit'
  diskcast vm ./root -o vm.vhdx --profile hyperv --output json | jq .partitions
  diskcast vm oci:./app:latest -o app.qcow2 --profile qemu --hostname app1 \\
      --ssh-key ~/.ssh/id_ed25519.pub --run-entrypoint

SRC is a container image (oci:, oci-archive:, docker-archive:, docker://) flattened with
its whiteouts, or a directory or tar holding a root filesystem. The disk is GPT: an ESP
(FAT32) with systemd-boot (from the image, else this machine's systemd-boot-efi package,
else --loader), the kernel and initramfs in /diskcast/, and the root filesystem as ext4
(Discoverable Partitions root type), booted with root=PARTUUID=... and the serial console.
The kernel is the image's newest /boot/vmlinuz-*, /usr/lib/modules/*/vmlinuz or /vmlinuz
unless --kernel names one; --cmdline is appended to the command line diskcast builds.

The guest gets /etc/fstab (root and ESP by PARTUUID), an empty /etc/machine-id (first
boot), DHCP (systemd-networkd or ifupdown, when the image has one), and on request a host
name, root's password hash (--root-password-hash, e.g. from `openssl passwd -6`), SSH
keys for root, and a systemd service running the image's ENTRYPOINT/CMD. The source is
never changed. An image without a kernel needs --kernel (e.g. Debian's
linux-image-cloud-amd64, which boots without an initramfs).

Profiles pick the format: azure (fixed VHD, whole MiB), esxi and aws (streamOptimized
VMDK), hyperv (VHDX, UEFI only), kubevirt (qcow2), qemu (qcow2, zstd-compressed).
Everything is written in one pass: no root, no mount, no loop device, no raw intermediate.";

const MKFS_HELP: &str = "\
Examples:
  diskcast mkfs fat32 ./efi -o esp.img --size 100M --label ESP
  diskcast mkfs ext4 rootfs.tar.gz -o root.qcow2 -O qcow2
  diskcast mkfs exfat ./big-files -o data.img --label DATA  # files over 4 GiB too
  diskcast mkfs fat32 disk.vmdk:esp -o esp-copy.img     # a partition of another disk

SRC is a directory, a tar, or a disk image (DISK or DISK:PART). Without --size the
filesystem is sized to its content plus headroom. FAT32 needs about 33 MiB: smaller sizes
give FAT16 (with a warning). Entries a filesystem cannot hold (symlinks, devices and
case-colliding names on FAT and exFAT) are listed on stderr; a file too large for it (over
4 GiB - 1 on FAT; exFAT holds any size) is an error, and nothing is written. The image is
written straight into the output format (-O), no raw intermediate; SOURCE_DATE_EPOCH makes
it reproducible.";

const MKDISK_HELP: &str = "\
Examples:
  diskcast mkdisk -o disk.qcow2 -O qcow2 --part esp:fat32:100M:./efi --part root:ext4:auto:rootfs.tar
  diskcast mkdisk -o usb.img --table mbr --bootable 1 --part fat:fat32:1G:./files
  diskcast mkdisk -o data.img --part data=fat:exfat:auto:./isos   # exFAT data partition
  diskcast mkdisk -o vm.vmdk -O vmdk --part ESP=esp:fat32:64M:./efi --part swap:none:512M \\
      --part root:ext4:2G:./root

--part [NAME=]TYPE:FS:SIZE[:SRC], once per partition, in order:
  TYPE  esp, root (this machine), root-x86-64, root-arm64, linux, swap, fat
  FS    fat32, fat16, exfat, ext4, or none (left zeroed)
  SIZE  a size (K, M, G) or auto (content plus headroom)
  SRC   a directory, tar or disk image (DISK:PART); none: an empty filesystem
Partitions start on 1 MiB boundaries; GPT type GUIDs follow the Discoverable Partitions
Specification. Read the result back with `diskcast ls disk.qcow2:esp`.";

const LS_HELP: &str = "\
Examples:
  diskcast ls rootfs.tar.gz                   # names in the root directory
  diskcast ls -l rootfs.tar.gz etc            # mode, uid/gid, size, mtime, name -> target
  diskcast ls -lR ./srv/root                  # a host directory, everything below it
  diskcast ls --output json disk.qcow2 /boot | jq '.[].path'

SRC is a directory, a tar (plain, .gz or .zst, recognised by content), or a disk image
of any block format (raw, qcow2, vmdk, vhd, vhdx, vdi) holding a filesystem diskcast
reads. Symlinks in PATH are followed inside the tree, never out of it.";

const CAT_HELP: &str = "\
Examples:
  diskcast cat rootfs.tar.gz etc/os-release
  diskcast cat disk.qcow2 /etc/fstab | grep root

Symlinks are followed inside the tree (an absolute target starts at the tree's root).
Directories and special files are refused.";

const EXTRACT_HELP: &str = "\
Examples:
  diskcast extract rootfs.tar.gz ./root       # into a new (or empty) directory
  diskcast extract -p disk.qcow2 ./files      # the filesystem of a disk image
  diskcast extract ./root -o root.tar         # a directory as a reproducible PAX tar
  diskcast extract layer.tar.zst -o - | tar -tvf -

Extraction never writes outside DIR: every path is opened beneath DIR without following
symlinks, members with '..' are skipped (with a warning), absolute symlinks are created
as they are but never followed, and metadata is set only on the entries diskcast made
(another user swapping them for symlinks meanwhile changes nothing outside DIR). DIR
itself must not be a symlink. Device nodes, setuid/setgid bits of files and
security.capability/trusted.* xattrs are recreated only with --privileged, as root (like
bsdtar's -p): give it only for images you trust. As a non-root user, owners are not set.
Everything skipped is listed on stderr. An entry that cannot be created (a symlink
target the kernel refuses, a name too long, data that cannot be read) is left out whole,
the rest is extracted, and the command exits 1 saying how many entries were not
extracted. Sparse files stay sparse; the files of a tar are written in one pass over it.";

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal.
    Auto,
    /// Always a bar on stderr.
    Bar,
    /// JSON lines on stderr: {"done":..,"total":..,"rate":..}.
    Json,
    /// Nothing.
    None,
}

/// Options every command that opens images takes.
#[derive(Debug, Default, Args)]
pub struct OpenArgs {
    /// Allow opening this backing file (or any file under this directory) even though it is
    /// outside the directory of the image that names it. May be repeated.
    #[arg(long = "allow-backing", value_name = "PATH")]
    pub allow_backing: Vec<PathBuf>,
    /// If an image has a pending log (a VHDX that was not closed cleanly), replay the log
    /// into the image file before reading it. This WRITES TO THE INPUT FILE, as Hyper-V and
    /// qemu do when they open it; without this flag such an image is refused.
    #[arg(long = "replay-log", conflicts_with = "force_share")]
    pub replay_log: bool,
    #[command(flatten)]
    pub share: ShareArgs,
}

/// `-U`: the same flag and help for every command that reads images (`info`, `convert`,
/// ..., and the tree commands).
#[derive(Debug, Default, Clone, Copy, Args)]
pub struct ShareArgs {
    /// Read an image even though another process (a running VM, qemu-io) has it open for
    /// writing, as qemu-img -U does. Without it such an image is refused, since what is
    /// read may be torn. diskcast locks the images it uses the way qemu does, so each
    /// sees the other.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
}

impl ShareArgs {
    /// How the images read are locked: qemu-img's shared read lock, or with `-U` one
    /// that lets writers be.
    pub fn lock_mode(self) -> diskcast_block::lock::LockMode {
        if self.force_share { diskcast_block::lock::LockMode::ReadShared } else { diskcast_block::lock::LockMode::Read }
    }
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format of FILE (probed from its magic if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Also open and show every image of the backing chain (JSON: a "backing-chain" array).
    /// Without it no backing file is opened, so any image can be inspected safely.
    #[arg(long)]
    pub backing_chain: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    /// The image.
    pub file: PathBuf,
}

/// How an image is written, for every command that writes one: compression, progress
/// and threads.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Compress the output (qcow2: zlib, or zstd with the format option
    /// compression_type=zstd; streamOptimized VMDK).
    #[arg(short = 'c')]
    pub compress: bool,
    /// Show a progress bar (same as --progress=bar).
    #[arg(short = 'p')]
    pub progress_bar: bool,
    /// How to report progress.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Worker threads (default: one per core).
    #[arg(short = 'j', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
}

/// Where and how a built image is written (`mkfs`, `mkdisk`; `vm` fills it from its own
/// flags).
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// The image to write: a file (written in full, then put in place), `-` or a pipe or
    /// character device (raw only, front to back), or a block device (raw, written in
    /// place when nothing uses it).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Block format of OUT (raw, qcow2, vmdk, vhd, vhdx, vdi).
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// Format options of OUT, comma separated (`diskcast formats` lists them).
    #[arg(long = "format-options", value_name = "KEY=VALUE,..")]
    pub format_options: Vec<String>,
    #[command(flatten)]
    pub write: WriteArgs,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Format of SRC (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Write what platform P takes (azure, esxi, aws, hyperv, kubevirt, qemu): sets -O,
    /// -o and -c; kubevirt wraps the qcow2 as a containerDisk (DST oci:DIR:TAG or
    /// oci-archive:FILE:TAG).
    #[arg(long = "profile", value_name = "P")]
    pub profile: Option<String>,
    /// Format of DST.
    #[arg(short = 'O', long = "output-format", value_name = "FMT", default_value = "raw")]
    pub output_format: String,
    /// Format options, comma separated (`diskcast formats` lists them).
    #[arg(short = 'o', value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub write: WriteArgs,
    /// Zero runs at least this long become holes; 0 writes every byte (fully allocated).
    #[arg(short = 'S', value_name = "SIZE", default_value = "4K")]
    pub min_sparse: String,
    /// Do not create DST: write into it as it is (an existing raw file, or a block device
    /// such as a disk or an LV), which must hold at least the source's size. Raw only;
    /// written in place, not through a temporary file.
    #[arg(short = 'n')]
    pub no_create: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub image: crate::cmd::oci::ImageWriteArgs,
    /// The source image. `-`, a pipe or a character device is read to its end first (into
    /// an unnamed temporary file beside DST, or in $TMPDIR) and taken as a raw disk. For a
    /// container image DST: a directory, tar, disk image or image.
    pub src: PathBuf,
    /// The new image, or `-` for standard output (raw, or streamOptimized VMDK); a
    /// container image when it starts with oci:, oci-archive: or docker-archive:, pushed
    /// to a registry when it starts with docker://.
    pub dst: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Format of the first image.
    #[arg(short = 'f', value_name = "FMT")]
    pub format_a: Option<String>,
    /// Format of the second image.
    #[arg(short = 'F', value_name = "FMT")]
    pub format_b: Option<String>,
    /// Show a progress bar.
    #[arg(short = 'p')]
    pub progress_bar: bool,
    /// Worker threads (default: one per core).
    #[arg(short = 'j', long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Print nothing, only set the exit status.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    pub a: PathBuf,
    pub b: PathBuf,
}

/// One image to look at (`check`, `map`).
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub open: OpenArgs,
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Format of the new image.
    #[arg(short = 'f', long = "format", value_name = "FMT", default_value = "raw")]
    pub format: String,
    /// Format options, comma separated (`diskcast formats` lists them).
    #[arg(short = 'o', value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    /// Backing file to record in the new image.
    #[arg(short = 'b', value_name = "BACKING")]
    pub backing: Option<String>,
    /// Format of the backing file (probed if not given).
    #[arg(short = 'F', value_name = "FMT")]
    pub backing_format: Option<String>,
    pub file: PathBuf,
    /// Virtual size, e.g. 10G (taken from the backing file if left out).
    pub size: Option<String>,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Format to measure for.
    #[arg(short = 'O', long = "output-format", value_name = "FMT")]
    pub output_format: String,
    /// Format options of the new image, comma separated (`diskcast formats` lists them).
    #[arg(short = 'o', value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    /// Compressed output (measured as uncompressed: an upper bound, as qemu-img does).
    #[arg(short = 'c')]
    pub compress: bool,
    /// Format of SRC (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Measure an empty image of this size instead of a source.
    #[arg(long, value_name = "SIZE", conflicts_with = "src")]
    pub size: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub open: OpenArgs,
    #[arg(required_unless_present = "size")]
    pub src: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FormatsArgs {
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}
