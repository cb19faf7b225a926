#!/usr/bin/env bash
# Installs what diskcast's tests and demo need on Debian 12 (bookworm) or later: the oracle
# tools that judge our output, and the tools that make test inputs. Idempotent; needs root
# (uses sudo when not root). The tests fail, never skip, when one of these is missing.
#
# On bookworm, e2fsprogs (>= 1.47.1: `mke2fs -d TARBALL`) and qemu-system-x86 10 come from
# bookworm-backports, which this script adds (same mirror as the main suites).
#
#   qemu-utils, qemu-system-x86, ovmf, seabios: qemu-img/qemu-io; boot tests (UEFI and BIOS)
#   procps, coreutils:        kill (SIGINT tests), timeout (bounds every oracle call)
#   xorriso, genisoimage, libarchive-tools (bsdtar), 7zip, udftools, python3-pycdlib:
#                             ISO 9660/UDF inputs and readers
#   dosfstools, mtools, gdisk, fdisk, e2fsprogs: FAT, GPT/MBR and ext4 makers and checkers
#   skopeo, umoci, docker-registry: OCI images, transports and a registry on loopback
#   busybox-static, cpio, attr: small root filesystems, initramfs, xattrs in test trees
#   syslinux*, isolinux, systemd-boot-efi, grub-efi-amd64-bin: boot loaders for boot tests
#   grub-rescue-pc:           a real Debian-made bootable ISO (/usr/lib/grub-rescue) to read
set -euo pipefail
packages=(
  qemu-utils qemu-system-x86 ovmf seabios procps coreutils
  xorriso genisoimage libarchive-tools 7zip udftools python3-pycdlib
  dosfstools mtools gdisk fdisk e2fsprogs
  skopeo umoci docker-registry
  busybox-static cpio attr
  syslinux syslinux-common isolinux extlinux syslinux-efi systemd-boot-efi grub-efi-amd64-bin
  grub-rescue-pc
)
# Packages that must come from backports on bookworm (older releases there are too old).
backports=(qemu-system-x86 qemu-system-common qemu-system-data seabios e2fsprogs libext2fs2)

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
need_bpo=0
if [ "$codename" = bookworm ]; then
  ver=$(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null || true)
  dpkg --compare-versions "${ver:-0}" ge 1.47.1 || need_bpo=1
  dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed' || need_bpo=1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ] || [ $need_bpo = 1 ]; then
  if [ "$codename" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" | $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  $sudo apt-get update -qq
  install=("${missing[@]}")
  if [ "$codename" = bookworm ]; then
    # Ask for the backports versions explicitly; the rest from the main suite.
    rest=()
    for p in "${install[@]}"; do
      case " ${backports[*]} " in *" $p "*) ;; *) rest+=("$p") ;; esac
    done
    install=("${rest[@]}")
    for p in "${backports[@]}"; do install+=("$p/bookworm-backports"); done
    dpkg-query -W -f='${Status}' qemu-utils 2>/dev/null | grep -q 'install ok installed' ||
      install+=("qemu-utils/bookworm-backports")
  fi
  $sudo apt-get install -y -qq --no-install-recommends "${install[@]}" >/dev/null
fi

for tool in qemu-img qemu-io qemu-system-x86_64 kill timeout xorriso genisoimage isoinfo bsdtar 7zz \
  mkudffs udfinfo mkfs.fat fsck.fat mdir mcopy sgdisk sfdisk mke2fs e2fsck debugfs skopeo umoci \
  docker-registry busybox cpio setfattr getfattr; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is still missing after install" >&2; exit 1; }
done
[ -e /usr/lib/grub-rescue/grub-rescue-cdrom.iso ] || { echo "setup: grub-rescue-pc's ISO is missing after install" >&2; exit 1; }
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ] ||
  { echo "setup: OVMF firmware is missing after install" >&2; exit 1; }
# Debian's python (tests call /usr/bin/python3: a pyenv python on PATH lacks Debian's modules).
/usr/bin/python3 -c 'import pycdlib' 2>/dev/null || { echo "setup: python3-pycdlib is missing after install" >&2; exit 1; }
mke2fs -V 2>&1 | awk 'NR==1 { split($2, v, "."); if (v[1] < 1 || (v[1] == 1 && (v[2] < 47 || (v[2] == 47 && v[3] < 1)))) { print "setup: mke2fs " $2 " is older than 1.47.1" > "/dev/stderr"; exit 1 } }'
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
echo "setup: $(qemu-img --version | head -1); $(mke2fs -V 2>&1 | head -1); $(cargo --version)"
