//! The command line's grammar: the subcommands, their help texts and examples. Each
//! command's own flags are in its module under `cmd/`, the groups several share in
//! `common::args`; validation into plans happens in the commands.

use crate::cmd::{
    amend, bench, bitmap, cat, check, commit, compare, convert, create, dd, docs, extract, formats, info, inspect, iso,
    ls, measure, mkdisk, mkfs, oci, rebase, resize, snapshot, usb, vm, vulndb, wim, write,
};
use clap::{Parser, Subcommand};

/// The top-level examples; `main` appends the list of formats from the registry.
pub const EXAMPLES: &str = "\
Examples:
  diskcast info disk.qcow2
  diskcast convert -p -O qcow2 -c -o compression_type=zstd disk.raw disk.qcow2
  diskcast convert -O raw disk.qcow2 - | gzip > disk.raw.gz
  diskcast compare disk.raw disk.qcow2
  diskcast create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2";

/// `0.1.0 (abc1234 2026-12-07)`: the package version, and the commit and its date when
/// built from a git clone (build.rs); the version alone from a source tarball.
pub const VERSION: &str = env!("DISKCAST_VERSION");

/// Convert between disk, VM, optical and container images.
#[derive(Debug, Parser)]
#[command(name = "diskcast", version = VERSION, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show an image's format, sizes, cluster size, compression and backing chain.
    #[command(
        after_help = "Examples:\n  diskcast info disk.qcow2\n  diskcast info --backing-chain --output json overlay.qcow2 | jq '.\"backing-chain\"'\n  diskcast info https://host/images/disk.qcow2      # range requests; backing files beside it\n\nFILE may be an http:// or https:// URL of a server that honours Range requests\n(docs/http.md)."
    )]
    Info(info::InfoArgs),
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
  diskcast convert disk.qcow2 app.ova --cpus 4 --memory 8G     # OVA for VMware/VirtualBox
  diskcast convert app.ova disk.qcow2                          # an OVA's disk (manifest checked)
  diskcast convert --profile gce disk.qcow2 image.tar.gz       # disk.raw for Compute Engine
  diskcast convert -O vhdx disk.vmdk disk.vhdx                 # VMware -> Hyper-V
  diskcast convert -O vdi disk.vhdx disk.vdi                   # Hyper-V -> VirtualBox
  diskcast convert -n -O raw disk.qcow2 /dev/vg0/vm-disk        # into an existing LV or disk
  zcat disk.raw.gz | diskcast convert -f raw -O qcow2 - disk.qcow2   # a pipe is a raw disk
  diskcast convert -O raw https://host/disk.qcow2 disk.raw     # over HTTP(S), presigned URLs too

Formats: raw, qcow2, vmdk, vhd (also called vpc), vhdx, vdi; `diskcast formats` lists
each one's -o options. DST `-` is standard output, for raw and streamOptimized VMDK.
SRC `-` (or a pipe, or a character device) is read whole into an unnamed temporary file
first, so every target format works; it is a raw disk (a piped image of another format
is refused: save it to a file). A block device is read and written at its full size.
SRC may be an http:// or https:// URL: read with range requests (read-ahead, retries
resumed where an answer broke off, the file's ETag checked on every answer), backing
files looked up beside it on the server, certificates checked against the system's CA
store (--tls-verify=false skips that). From a server that ignores ranges only a raw disk
or a streamOptimized VMDK can be read, front to back into a temporary file beside DST;
other formats are refused (download them first).
Images in use by qemu (a running VM) are refused; -U reads a source anyway.

The output is written as an unnamed file beside DST and linked into place only when
everything succeeded; on an error, Ctrl-C or kill no file is left. An existing DST that
a VM or another tool has open is refused, never replaced. DST /dev/null, /dev/stdout, a
pipe or another character device is written in place, front to back (raw or
streamOptimized VMDK); a block device only with -n, and only when nothing uses it (not
mounted, no mounted partition, not swap, dm or RAID, not the running system's, large
enough).")]
    Convert(convert::ConvertArgs),
    /// Compare the guest-visible content of two images (exit 0 same, 1 different, 2 error).
    #[command(after_help = "\
Only content counts, not format or allocation: a raw file and a qcow2 holding the same
bytes are identical. When the sizes differ, the extra part of the larger image must read
as zeros. The first differing offset is printed.

Example:
  diskcast compare disk.raw disk.qcow2 && echo same")]
    Compare(compare::CompareArgs),
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
    Check(check::CheckArgs),
    /// Show which ranges of an image hold data, zeros, or nothing.
    #[command(after_help = "\
Each range is data (stored), zero (reads as zeros, stored as such), unallocated, or
comes from a backing file (depth says how far down the chain).

Example:
  diskcast map --output json disk.qcow2")]
    Map(crate::cmd::map::MapArgs),
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
    Create(create::CreateArgs),
    /// List the formats and the `-o` options each one takes.
    #[command(after_help = "Example:\n  diskcast formats\n  diskcast formats --output json")]
    Formats(formats::FormatsArgs),
    /// Say how large an image would be after converting to a format.
    #[command(after_help = "\
Examples:
  diskcast measure -O qcow2 disk.raw
  diskcast measure -O qcow2 --size 100G --output json")]
    Measure(measure::MeasureArgs),
    /// Optical discs: show and extract El Torito boot images.
    #[command(subcommand)]
    Iso(iso::IsoCommand),
    /// List the files of a directory, tar or disk image's filesystem (like ls).
    #[command(after_help = LS_HELP)]
    Ls(ls::LsArgs),
    /// Print one file of a directory, tar or disk image's filesystem.
    #[command(after_help = CAT_HELP)]
    Cat(cat::CatArgs),
    /// Extract a tree into a directory (safely), or write it as a tar.
    #[command(after_help = EXTRACT_HELP)]
    Extract(extract::ExtractArgs),
    /// The packages and libraries of any image: table, JSON, SPDX or CycloneDX.
    #[command(after_help = INSPECT_HELP)]
    Inspect(inspect::InspectArgs),
    /// Container images: inspect an OCI or Docker image.
    #[command(subcommand)]
    Oci(oci::OciCommand),
    /// The OSV advisory database `inspect --vuln-db` reads: fetch or refresh it.
    #[command(subcommand)]
    Vulndb(vulndb::VulndbCommand),
    /// Build a filesystem image (FAT32, FAT16, ext4) from a tree, in any block format.
    #[command(after_help = MKFS_HELP)]
    Mkfs(mkfs::MkfsArgs),
    /// Build a partitioned disk (GPT or MBR) with filesystems from trees, in one pass.
    #[command(after_help = MKDISK_HELP)]
    Mkdisk(mkdisk::MkdiskArgs),
    /// Make a container image or root filesystem a bootable VM disk, in any format.
    #[command(after_help = VM_HELP)]
    Vm(vm::VmArgs),
    /// Windows images: split a WIM into .swm parts that fit FAT32.
    #[command(subcommand)]
    Wim(wim::WimCommand),
    /// Write an image of any format onto a block device (a USB stick, a disk) or over an
    /// existing file, safely, then read it back and compare.
    #[command(after_help = WRITE_HELP)]
    Write(write::WriteImageArgs),
    /// Change an image's virtual size in place (raw and qcow2, as qemu-img resize).
    #[command(after_help = RESIZE_HELP)]
    Resize(resize::ResizeArgs),
    /// Change an overlay's backing file, keeping what its guest sees (as qemu-img rebase).
    #[command(after_help = REBASE_HELP)]
    Rebase(rebase::RebaseArgs),
    /// Write an overlay's data into its backing file, then empty it (as qemu-img commit).
    #[command(after_help = COMMIT_HELP)]
    Commit(commit::CommitArgs),
    /// Change an image's format options in place (qcow2 compat, refcount_bits,
    /// lazy_refcounts, size), as qemu-img amend.
    Amend(amend::AmendArgs),
    /// Add, remove, clear, enable or disable a qcow2 image's persistent dirty bitmaps, as
    /// qemu-img bitmap.
    Bitmap(bitmap::BitmapArgs),
    /// List, create, apply or delete an image's internal snapshots (qcow2, as qemu-img snapshot).
    #[command(after_help = SNAPSHOT_HELP)]
    Snapshot(snapshot::SnapshotArgs),
    /// Copy part of an image into a new image, with qemu-img dd's operands.
    #[command(after_help = DD_HELP)]
    Dd(dd::DdArgs),
    /// Measure read or write speed on an image, as qemu-img bench does.
    #[command(after_help = BENCH_HELP)]
    Bench(bench::BenchArgs),
    /// Make a USB installer stick image from an ISO (dd copy, or GPT + FAT32 bootable by
    /// UEFI and BIOS), or a multi-boot stick with a GRUB menu from several ISOs.
    #[command(after_help = USB_HELP)]
    Usb(usb::UsbArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(docs::CompletionsArgs),
    /// Write the man pages: diskcast.1 and one per command (diskcast-convert.1, ...).
    #[command(after_help = MAN_HELP)]
    Man(docs::ManArgs),
}

const REBASE_HELP: &str = "\
The safe mode (no -u) opens the old and the new backing chain and, for every cluster
FILE does not hold itself where the two read differently, writes the old data into FILE;
then the header names the new backing file. The guest sees the same disk before and
after. -b \"\" makes FILE standalone (all the old backing data it needs copied in).
-u writes only the new name and format, opening nothing: for a backing file that was
moved or renamed. Only qcow2 images record a backing file that can be changed (qemu-img
refuses the other formats too). A new backing file outside FILE's directory needs
--allow-backing, as reading FILE later will.

Examples:
  diskcast rebase -b new-base.qcow2 -F qcow2 overlay.qcow2      # same guest view
  diskcast rebase -b \"\" overlay.qcow2                           # standalone
  diskcast rebase -b /images/base.qcow2 -F qcow2 --allow-backing /images overlay.qcow2
  diskcast rebase -u -b base-v2.qcow2 -F qcow2 overlay.qcow2    # the base was renamed";

const COMMIT_HELP: &str = "\
Every range FILE (and, with -b BASE, every image between FILE and BASE) holds is written
into the backing file (or BASE), which grows to FILE's size if it is smaller. Then FILE
is emptied: all its clusters unallocated, the file cut to its metadata, so it reads
from the backing file again (qemu-img does the same; -d keeps FILE as it is, and so
does -b). The base is written in place: raw, qcow2, VDI, VHD and VHDX (fixed, dynamic)
and VMDK (monolithicSparse, monolithicFlat) bases; blocks and grains are added on first
write and their tables written last (a VHDX's through its log).

Examples:
  diskcast commit -p overlay.qcow2
  diskcast commit -b base.qcow2 top.qcow2           # through mid.qcow2, keeps both
  diskcast commit -d -r 100M overlay.qcow2          # keep the overlay, 100 MiB/s";

const COMPLETIONS_HELP: &str = "\
Examples:
  diskcast completions bash > /etc/bash_completion.d/diskcast
  diskcast completions bash > ~/.local/share/bash-completion/completions/diskcast
  diskcast completions zsh > \"${fpath[1]}/_diskcast\"
  diskcast completions fish > ~/.config/fish/completions/diskcast.fish
  source <(diskcast completions bash)          # this shell only

Commands, subcommands, flags and the values of flags with a fixed set (--output human|json,
-t CACHE...) complete; file arguments complete as file names.";

const MAN_HELP: &str = "\
Examples:
  diskcast man /usr/local/share/man/man1 && mandb -q
  diskcast man ./man && man -l man/diskcast-convert.1

The pages are made from the same definitions as --help: every flag, its help and the
examples. The names written are printed, one a line (--output json: {\"pages\": [...]}).";

const WRITE_HELP: &str = "\
Examples:
  diskcast write debian.iso /dev/disk/by-id/usb-SanDisk_Cruzer_4C53-0:0
  diskcast write -p vm.qcow2 /dev/sdb                     # qcow2, VMDK, VHDX... read directly
  diskcast write --yes --progress=json disk.vmdk /dev/sdc  # scripts: no prompt, JSON progress
  diskcast write --no-verify disk.raw /dev/vg0/scratch

Before anything is written, DEVICE is refused with the reason when it is mounted or has a
mounted partition, is a swap area, is part of a device-mapper or RAID device, holds the
running system (/, /boot), holds IMAGE (its filesystem, or a loop device over it), is
read-only, or is smaller than the image. Then it is shown (model, size, partitions) and
you are asked to type yes; without a terminal to ask on, write refuses unless --yes. A
symlink is followed only to a block device (the real device is shown); a symlink to a
file is refused: name the file itself. An existing regular file is given the image's
length and written in place.

Only the image's data is read and written: ranges it leaves empty are zeroed by the
kernel (a hole on a file; write-zeroes on a device, which unmaps where the device
guarantees zeros and writes zeros otherwise), so DEVICE reads back exactly as the image.
Large writes bypass the page cache (O_DIRECT; the page cache where the filesystem refuses
it, with a note), the device is synced, its cache dropped and everything read back and
compared (--no-verify skips that). Bytes past the image's end are left as they are.";

const RESIZE_HELP: &str = "\
Examples:
  diskcast resize disk.qcow2 +10G                 # grow by 10 GiB
  diskcast resize -f raw --preallocation=falloc disk.raw 20G
  diskcast resize --shrink disk.qcow2 -- -1G      # shrink: data past the new end is lost

Like qemu-img resize: raw and qcow2 images grow, and shrink with --shrink; the other
formats are refused with qemu-img's message, as qemu-img refuses them. The grown range
reads as zeros. The image is locked as a writer: one a VM uses is refused. Prints
\"Image resized.\" unless -q; errors exit 1.";

const SNAPSHOT_HELP: &str = "\
Examples:
  diskcast snapshot -c before-upgrade disk.qcow2    # take a snapshot
  diskcast snapshot -l disk.qcow2                   # list them (qemu-img's table)
  diskcast snapshot -a before-upgrade disk.qcow2    # revert to it
  diskcast snapshot -d before-upgrade disk.qcow2    # delete it
  diskcast convert -l before-upgrade -O qcow2 disk.qcow2 old.qcow2   # read one

Like qemu-img snapshot: -a takes an ID or a name, -d a name; IDs are assigned as qemu
assigns them, and snapshots either tool makes are read by the other. The image is
locked as a writer for -c, -a and -d: one a VM uses is refused. Refused, naming the
reason: images marked corrupt or dirty, encrypted images, external data files and
images with persistent bitmaps. -l prints nothing for an image without snapshots;
--output json prints the list qemu-img info --output=json shows. Errors exit 1.";

const DD_HELP: &str = "\
Examples:
  diskcast dd if=disk.qcow2 of=mbr.raw bs=512 count=1
  diskcast dd -O qcow2 if=disk.vmdk of=tail.qcow2 bs=1M skip=100

Operands as qemu-img dd takes them. The output (created, or replaced; -O sets its
format, default raw) holds min(count*bs, input size) - skip*bs bytes of the input,
starting skip*bs bytes in; as in qemu-img, count counts from the input's start, so with
skip the output holds count - skip blocks. A skip past that gives an empty output and a
warning. The output is written like convert's: sparse, in parallel, put in place only
when complete.";
const BENCH_HELP: &str = "\
Examples:
  diskcast bench -f qcow2 disk.qcow2                      # 75000 reads of 4 KiB, 64 in flight
  diskcast bench -c 1000 -s 1M -d 4 disk.vmdk             # 1000 reads of 1 MiB
  diskcast bench -w -f raw --pattern=0xab --flush-interval=64 scratch.raw   # WRITES INTO THE FILE

The flags, lines printed and exit codes of qemu-img bench: request i starts at OFFSET +
i * STEP, wrapped to end inside the image; a request past the end fails the run (exit 1).
-w writes the pattern into FILE through the format's in-place writer: raw, qcow2, VDI,
VHD, VHDX and VMDK (blocks and grains added on first write, their tables written at the
end); other formats are refused before anything is written.";
const USB_HELP: &str = "\
Examples:
  diskcast usb debian-12.iso -o stick.img                  # then: diskcast write stick.img /dev/sdX
  diskcast usb debian-live.iso -o stick.img --mode fat32 --persistence 4G
  diskcast usb installer.iso -o stick.qcow2 -O qcow2 --size 16G --output json
  diskcast usb Win11.iso -o stick.img --windows-layout exfat
  diskcast usb debian-live.iso ubuntu.iso -o stick.img --default 2 --timeout 5

Modes (--mode): dd copies a hybrid ISO (an MBR or GPT in its system area) as it is; a
non-hybrid ISO is refused there. fat32 makes a GPT disk whose first partition (ESP type)
is FAT32 holding every file of the ISO's richest tree (UDF, Rock Ridge, Joliet): UEFI
boots EFI/BOOT/BOOTX64.EFI (from the ISO, or from its El Torito EFI image); BIOS boots
GRUB (this machine's grub-pc-bin) in a BIOS boot partition, reading the ISO's isolinux
configuration or its /boot/grub/grub.cfg. auto picks dd for hybrid ISOs, fat32 otherwise,
and says which and why. Symbolic links become copies of their targets; a file FAT cannot
hold (over 4 GiB - 1) is refused before writing, unless it is a WIM under sources/ (split
into install.swm, install2.swm, ... parts; --wim-part-size), or --windows-layout exfat
puts everything on an exFAT partition beside a FAT32 boot partition (every file but
sources/, plus sources/boot.wim). What each firmware boots, or
why not, is said on stderr and in the JSON summary.

Several ISOs make a multi-boot stick: a FAT32 boot partition with GRUB for UEFI
(BOOTX64.EFI) and BIOS (BIOS boot partition), and a data partition (--data-fs: FAT32 when
every ISO is under 4 GiB, else exFAT) holding each ISO unchanged as isos/NAME.iso. GRUB's
menu boots each by loopback with the kernel arguments its family needs (Debian live
findiso=, Ubuntu and Fedora iso-scan/filename=, Arch img_dev=/img_loop=, GRUB discs'
loopback.cfg), kernel and arguments taken from the ISO's own configuration; --default N
(1-based) boots after --timeout seconds. An ISO no entry could boot (a Debian installer
ISO, an unknown family) is refused before anything is written.

OUT is an image file in any block format (-O), or a block device: then it is checked,
shown, confirmed (or --yes) and read back as `diskcast write` does.";

const VM_HELP: &str = "\
Examples:
  diskcast vm oci:./image:latest -o vm.qcow2 -O qcow2          # kernel from the image
  diskcast vm docker://docker.io/library/debian:12 -o vm.vhd --profile azure \\
      --kernel /boot/vmlinuz-6.1.0-27-cloud-amd64
  diskcast vm rootfs.tar -o vm.vmdk --profile esxi --cmdline 'init=/sbin/myinit'
  diskcast vm rootfs.tar -o app.ova --profile esxi --cpus 2 --memory 4G   # OVA, pvscsi
  diskcast vm rootfs.tar -o image.tar.gz --profile gce       # disk.raw, whole GiB, tar.gz
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

const INSPECT_HELP: &str = "\
Examples:
  diskcast inspect oci-archive:app.tar                     # a container image
  diskcast inspect --output spdx-json disk.qcow2 > sbom.json  # a VM disk's root partition
  diskcast inspect --output cyclonedx-json debian-live.iso    # a live ISO's squashfs root
  diskcast inspect --output json ./rootfs | jq -r '.packages[].purl'
  diskcast inspect --verify-key cosign.pub docker://reg.example/app:1  # exit 4 unless signed
  diskcast inspect --vuln-db osv/ --fail-on high disk.qcow2 # exit 3: a high or critical finding

OS packages come from the dpkg, apk or rpm database; language packages from the files
that name them: Python dist-info/egg-info, node_modules/**/package.json, Go and
cargo-auditable binaries' build info, Java archives' pom.properties (nested jars too),
Ruby specifications/*.gemspec, Composer's installed.json. Nothing is extracted. With
SOURCE_DATE_EPOCH set, SPDX and CycloneDX documents are the same bytes on every run.

--vuln-db matches the packages offline against OSV advisories as osv.dev publishes them
(a directory of *.json and zips, as `diskcast vulndb update DIR` fetches them, or one
zip), each ecosystem in its own version order (dpkg, rpm, apk, PEP 440, semver, Maven,
RubyGems, Composer); Debian and Ubuntu advisories through each package's
source. Findings follow the packages in the table, and are the vulnerabilities array of
json and cyclonedx-json. Exit 0: none found; 3: some found (at or above --fail-on).";

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
  diskcast extract --verify-key cosign.pub docker://reg.example/app:1 ./root  # signed only

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
