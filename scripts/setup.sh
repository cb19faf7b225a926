#!/usr/bin/env bash
# Installs what diskcast's tests and demo need on Debian 12 (bookworm) or later: the oracle
# tools that judge our output, and the tools that make test inputs. Idempotent; needs root
# (uses sudo when not root). The tests fail, never skip, when one of these is missing.
#
# On bookworm, e2fsprogs (>= 1.47.1: `mke2fs -d TARBALL`) and qemu-system-x86 10 come from
# bookworm-backports, which this script adds (same mirror as the main suites).
#
#   qemu-utils, qemu-system-x86, ovmf, seabios: qemu-img/qemu-io; boot tests (UEFI and BIOS)
#   qemu-system-arm, qemu-efi-aarch64: qemu-system-aarch64 (-M virt) and AAVMF, Debian's UEFI
#                             for 64-bit ARM: the arm64 boot test (tests/integration/vm_arm64.rs).
#                             On bookworm qemu-system-arm comes from backports too: bookworm's
#                             7.2 depends on qemu-system-common 7.2, which would take qemu 10's
#                             away from qemu-system-x86; AAVMF (2022.11) is bookworm's only one
#   procps, coreutils:        kill (SIGINT tests), timeout (bounds every oracle call)
#   time:                     GNU time (/usr/bin/time): peak memory of diskcast on hostile inputs
#   xorriso, genisoimage, libarchive-tools (bsdtar), 7zip, udftools, python3-pycdlib:
#                             ISO 9660/UDF inputs and readers
#   dosfstools, mtools, gdisk, fdisk, e2fsprogs: FAT, GPT/MBR and ext4 makers and checkers
#   lvm2:                     pvcreate/vgcreate/lvcreate/lvextend make the LVM test disks (on loop
#                             devices, metadata only: --driverloaded n), lvs/pvs judge our listing
#   skopeo, umoci, docker-registry: OCI images, transports and a registry on loopback
#   busybox-static, cpio, attr: small root filesystems, initramfs, xattrs in test trees
#   libcap2-bin:              setcap/getcap: file capabilities in `extract --privileged` tests
#   tar, gzip, xz-utils, zstd, util-linux (setpriv): GNU tar archives of every flavour as
#                             tar-reader oracles; extraction as an ordinary user
#   syslinux*, isolinux, systemd-boot-efi, grub-efi-amd64-bin: boot loaders for boot tests
#   grub-rescue-pc:           a real Debian-made bootable ISO (/usr/lib/grub-rescue) to read
#   debian-installer-12-netboot-amd64: downloaded and unpacked below, never installed
#   ipxe, memtest86+:         more Debian-made hybrid ISOs for `iso remaster`: ipxe.iso
#                             (isohybrid MBR over a cylinder-padded disc), memtest86+x64.iso
#                             (floppy emulation, ESP appended after the ISO)
#   grub-pc-bin:              GRUB's BIOS (i386-pc) images, which `diskcast vm --boot bios` and `diskcast usb` (fat32 sticks) install
#   grub-common:              grub-mkimage (which builds the GRUB images above), grub-mkrescue (the
#                             multi-boot tests' GRUB discs) and grub-script-check (judges the
#                             multi-boot menu); grub-efi-amd64-bin's x86_64-efi modules make the
#                             multi-boot stick's EFI/BOOT/BOOTX64.EFI
#   mmdebstrap:               a Debian root filesystem for the VM boot test
#   rpm, sqlite3, gpg, gpg-agent: rpm package databases (rpmdb.sqlite) made by rpmbuild and
#                             `rpm -i --justdb`, a gpg-pubkey to import; rpm -qa and sqlite3
#                             as oracles of the rpmdb and SQLite readers
#   db5.3-util:               db5.3_load/db5.3_dump: rpm's older Berkeley DB Packages files
#   exfatprogs, exfat-fuse:   mkfs.exfat/fsck.exfat/tune.exfat as exFAT maker and checker;
#                             exfat-fuse mounts exFAT where the kernel has no exfat driver
#   nodejs, npm, default-jdk-headless: npm installs and `jar` makes the Node packages and
#                             Java archives `inspect` lists (tests/integration/inspect.rs)
#   binutils:                 objcopy dumps the `.dep-v0` section cargo-auditable links into
#                             the Rust binary `inspect` reads (tests/integration/inspect.rs)
#   pigz:                     one of the gzip writers (with gzip, Go's compress/gzip and
#                             Python's gzip) whose layers must decode byte-equal to
#                             `gzip -dc` (tests/integration/oci.rs)
#   golang-go:                builds a Go program offline (a local `replace`d module) whose
#                             build info `inspect` lists; `go version -m` is the oracle
#   python3-pip:              installs the SBOM validators below (not packaged by Debian)
#   python3-packaging, libmaven3-core-java: Python's packaging.version and Maven's
#                             ComparableVersion (maven-artifact jar), reference version
#                             orders for crates/vulns/tests/versions.rs
#   ruby, php-cli, php-composer-semver: Gem::Version and composer/semver's VersionParser
#                             and Comparator, the reference RubyGems and Packagist
#                             version orders for crates/vulns/tests/versions.rs and
#                             tests/integration/vulndb.rs (whose gem `gem` builds and installs)
#   squashfs-tools:           mksquashfs (every compressor) makes the squashfs reader's inputs,
#                             unsquashfs -lln/-d judges its listing and extraction
#   xfsprogs, acl:            mkfs.xfs (protofiles, v4 and v5), xfs_db, xfs_io (shutdown: a dirty
#                             log) and xfs_repair -n make and judge the XFS reader's inputs;
#                             setfacl puts POSIX ACLs on the kernel-made XFS test tree
#   wimtools:                 wimlib-imagex: captures the WIMs the WIM splitter reads; its
#                             split, join and verify judge our .swm parts
#   bmap-tools:               bmaptool create/copy, what bench/write.sh measures `write` against
#   sbsigntool:               sbverify --list: the independent judge of the Authenticode signatures
#                             `vm --secure-boot` checks (shim, GRUB, kernel); sbattach --remove
#                             makes the unsigned kernel and GRUB of the negative tests
#   openssl:                  makes the keys and signatures (P-256, Ed25519, RSA) of the
#                             --verify-key tests and checks them as the reference verifier
#   systemd, cloud-init:      the judges of `vm`'s first-boot files (tests/integration/vm_firstboot.rs):
#                             systemd-repart grows the root partition of an enlarged disk as
#                             it does on boot, `cloud-init schema` checks the seeded user data;
#                             their files are copied into the test guests as Debian installs them
#   strace:                   counts the fsync calls of `convert -t unsafe` (none) and of a
#                             default convert (the output synced before it is put in place)
#   bash, fish, zsh, elvish:  load and run the scripts of `diskcast completions` (tests/integration/
#                             packaging.rs; PowerShell is not packaged by Debian)
#   groff-base, man-db, mandoc: render (`groff -ww`, `man -l`) and lint (`mandoc -Tlint`) the
#                             pages of `diskcast man`
#   git:                      `--version` names the commit; the test builds clones and tarballs
#   nginx-light:              the HTTP(S) server that honours Range requests (and ETag/If-Range)
#                             which images over http(s):// are read from (tests/integration/http.rs,
#                             bench/http.sh); started by the tests on loopback with their own
#                             config, never as a service
#   dpkg-dev, lintian:        scripts/deb.sh's package (cargo-deb runs dpkg-shlibdeps for
#                             Depends); lintian judges it, dpkg installs it into a throwaway
#                             root (tests/integration/packaging.rs)
#
# It also downloads (never installs) Debian's linux-image-cloud-amd64 and unpacks it under
# $DISKCAST_TEST_ASSETS (default /var/cache/diskcast-tests)/kernel/cloud-amd64: the kernel
# the VM boot tests put into their guests; shim-signed, shim-helpers-amd64-signed and
# grub-efi-amd64-signed under $DISKCAST_TEST_ASSETS/secureboot (never into this machine's
# boot path): the Secure Boot chain `vm --secure-boot` installs in the tests; and the arm64
# guest's parts (kernel/cloud-arm64, arm64-userland), extracted by mmdebstrap, which needs
# no arm64 architecture in dpkg.
set -euo pipefail
packages=(
  qemu-utils qemu-system-x86 ovmf seabios procps coreutils time
  qemu-system-arm qemu-efi-aarch64
  xorriso genisoimage libarchive-tools 7zip udftools python3-pycdlib
  dosfstools mtools gdisk fdisk e2fsprogs lvm2
  skopeo umoci docker-registry
  busybox-static cpio attr libcap2-bin
  tar gzip pigz xz-utils zstd util-linux
  syslinux syslinux-common isolinux extlinux syslinux-efi systemd-boot-efi grub-efi-amd64-bin
  grub-rescue-pc grub-pc-bin grub-common mmdebstrap ipxe memtest86+
  rpm sqlite3 gpg gpg-agent db5.3-util
  exfatprogs exfat-fuse
  squashfs-tools
  xfsprogs acl
  wimtools
  bmap-tools
  openssl
  sbsigntool
  strace
  bash fish zsh elvish groff-base man-db mandoc git dpkg-dev lintian
  systemd cloud-init
  nodejs npm default-jdk-headless
  golang-go binutils
  python3-pip
  python3-packaging libmaven3-core-java
  ruby php-cli php-composer-semver
  nginx-light
)
# Packages that must come from backports on bookworm (older releases there are too old).
backports=(qemu-system-x86 qemu-system-arm qemu-system-common qemu-system-data seabios e2fsprogs libext2fs2)

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

# Packages a command already on the machine stands for: machines that carry their own
# Node.js (NodeSource's nodejs, which bundles npm and conflicts with Debian's npm package),
# their own JDK or their own Go must not be asked to take Debian's.
satisfied_by_command() {
  case "$1" in
    nodejs) command -v node >/dev/null ;;
    npm) command -v npm >/dev/null ;;
    default-jdk-headless) command -v jar >/dev/null ;;
    git) command -v git >/dev/null ;;
    golang-go) command -v go >/dev/null ;;
    *) return 1 ;;
  esac
}

missing=()
for p in "${packages[@]}"; do
  satisfied_by_command "$p" && continue
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

for tool in qemu-img qemu-io qemu-system-x86_64 qemu-system-aarch64 kill timeout xorriso genisoimage isoinfo bsdtar 7zz \
  mkudffs udfinfo mkfs.fat fsck.fat mdir mcopy sgdisk sfdisk mke2fs e2fsck debugfs pvcreate lvcreate lvs skopeo umoci \
  docker-registry busybox cpio setfattr getfattr setcap getcap tar gzip xz zstd setpriv mkfifo mknod \
  grub-mkimage mmdebstrap rpm rpmbuild sqlite3 gpg gpg-agent gpgconf \
  db5.3_load db5.3_dump wimlib-imagex node npm jar go objcopy bmaptool openssl sbverify sbattach strace \
  bash fish zsh elvish groff man mandoc script git systemd-repart cloud-init resize2fs dumpe2fs ruby gem php \
  dpkg-shlibdeps lintian; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is still missing after install" >&2; exit 1; }
done
[ -e /usr/lib/grub-rescue/grub-rescue-cdrom.iso ] || { echo "setup: grub-rescue-pc's ISO is missing after install" >&2; exit 1; }
for iso in /usr/lib/ipxe/ipxe.iso /usr/lib/memtest86+/memtest86+x64.iso; do
  [ -e "$iso" ] || { echo "setup: $iso is missing after install (packages ipxe, memtest86+)" >&2; exit 1; }
done
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -e /usr/share/OVMF/OVMF_CODE.fd ] ||
  { echo "setup: OVMF firmware is missing after install" >&2; exit 1; }
[ -e /usr/share/AAVMF/AAVMF_CODE.fd ] && [ -e /usr/share/AAVMF/AAVMF_VARS.fd ] ||
  { echo "setup: AAVMF firmware (qemu-efi-aarch64) is missing after install" >&2; exit 1; }
# SBOM reference validators (tests/integration/inspect.rs): spdx-tools (pyspdxtools and
# its validator) for SPDX 2.3, cyclonedx-python-lib's JsonStrictValidator for CycloneDX 1.6.
/usr/bin/python3 -c 'import spdx_tools, cyclonedx' 2>/dev/null ||
  $sudo /usr/bin/python3 -m pip install --quiet --break-system-packages spdx-tools 'cyclonedx-python-lib[json-validation]'
# Common OVF Tool (not packaged by Debian): an independent OVF/OVA reader judging the
# descriptors diskcast writes (tests/integration/ova.rs: `cot info`).
command -v cot >/dev/null || $sudo /usr/bin/python3 -m pip install --quiet --break-system-packages cot
command -v cot >/dev/null || { echo "setup: cot (Common OVF Tool) is missing after install" >&2; exit 1; }
# CVSS v2, v3 and v4.0 reference scores (crates/vulns/tests/cvss.rs): Red Hat's cvss library.
/usr/bin/python3 -c 'import cvss' 2>/dev/null ||
  $sudo /usr/bin/python3 -m pip install --quiet --break-system-packages cvss
/usr/bin/python3 -c 'import packaging, cvss' || { echo "setup: python3-packaging or cvss is missing after install" >&2; exit 1; }
[ -e /usr/share/java/maven-artifact-3.x.jar ] || { echo "setup: libmaven3-core-java's maven-artifact jar is missing after install" >&2; exit 1; }
[ -e /usr/share/php/Composer/Semver/autoload.php ] || { echo "setup: php-composer-semver is missing after install" >&2; exit 1; }
# Debian's python (tests call /usr/bin/python3: a pyenv python on PATH lacks Debian's modules).
/usr/bin/python3 -c 'import pycdlib' 2>/dev/null || { echo "setup: python3-pycdlib is missing after install" >&2; exit 1; }
mke2fs -V 2>&1 | awk 'NR==1 { split($2, v, "."); if (v[1] < 1 || (v[1] == 1 && (v[2] < 47 || (v[2] == 47 && v[3] < 1)))) { print "setup: mke2fs " $2 " is older than 1.47.1" > "/dev/stderr"; exit 1 } }'

# The VM boot tests' kernels, downloaded (never installed) and unpacked as `dpkg-deb -x` does:
# cloud-amd64 (Debian's linux-image-cloud-amd64: ext4 and NVMe built in, virtio as modules)
# and generic-amd64 (linux-image-amd64: ahci, libata and ext4 as modules; the cloud kernel
# has no AHCI driver at all), which the AHCI boot test (tests/integration/vm_bus.rs) uses.
assets=${DISKCAST_TEST_ASSETS:-/var/cache/diskcast-tests}
unpack_debs() { # DIR PACKAGE...: downloaded and unpacked into DIR (replacing it), never installed
  local dir=$1 dl p
  shift
  dl=$(mktemp -d)
  chmod 777 "$dl"   # apt-get download as root hands the download to the _apt user
  (cd "$dl" && apt-get download -qq "$@" 2>&1 | grep -v 'unsandboxed' || true)
  for p in "$@"; do
    ls "$dl/${p}"_*.deb >/dev/null 2>&1 || { echo "setup: could not download $p" >&2; exit 1; }
  done
  $sudo rm -rf "$dir"
  $sudo mkdir -p "$dir"
  for p in "$dl"/*.deb; do $sudo dpkg-deb -x "$p" "$dir"; done
  rm -rf "$dl"
}
fetch_kernel() { # META-PACKAGE DIR
  local kdir=$assets/kernel/$2 kpkg
  ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1 && return 0
  kpkg=$(apt-cache depends "$1" | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] || { echo "setup: cannot resolve $1 to a kernel package" >&2; exit 1; }
  unpack_debs "$kdir" "$kpkg"
  ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1 || { echo "setup: no kernel under $kdir/boot" >&2; exit 1; }
}
fetch_kernel linux-image-cloud-amd64 cloud-amd64
fetch_kernel linux-image-amd64 generic-amd64
# Secure Boot (tests/integration/vm_secureboot.rs): shim signed by Microsoft, MokManager and
# GRUB signed by Debian, booted with OVMF's Secure Boot firmware and Microsoft's keys
# (OVMF_CODE_4M.secboot.fd, OVMF_VARS_4M.ms.fd, both in package ovmf).
sb=$assets/secureboot
[ -e "$sb/usr/lib/shim/shimx64.efi.signed" ] && [ -e "$sb/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ] ||
  unpack_debs "$sb" shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed
for f in usr/lib/shim/shimx64.efi.signed usr/lib/shim/mmx64.efi.signed usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed; do
  [ -e "$sb/$f" ] || { echo "setup: $sb/$f is missing after unpacking" >&2; exit 1; }
done
for f in /usr/share/OVMF/OVMF_CODE_4M.secboot.fd /usr/share/OVMF/OVMF_VARS_4M.ms.fd; do
  [ -e "$f" ] || { echo "setup: $f (package ovmf) is missing: the Secure Boot boot test needs it" >&2; exit 1; }
done
# A real Debian installer (tests/integration/usb.rs, debian_installer_*):
# debian-installer-12-netboot-amd64 (downloaded, never installed) holds the installer's
# kernel and initrd and Debian's boot screens and GRUB configuration, which the tests lay
# out as Debian's netinst ISO lays its own (no netinst ISO is in the archive) and boot
# from a stick to the installer's first dialog.
di=$assets/debian-installer
di_files=usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64
[ -e "$di/$di_files/initrd.gz" ] || unpack_debs "$di" debian-installer-12-netboot-amd64
for f in linux initrd.gz grub/grub.cfg boot-screens/txt.cfg; do
  [ -e "$di/$di_files/$f" ] || { echo "setup: $di/$di_files/$f is missing after unpacking" >&2; exit 1; }
done
# The arm64 guest (tests/integration/vm_arm64.rs): Debian's linux-image-cloud-amd64's arm64
# sibling (ext4 and NVMe built in, virtio as modules) under kernel/cloud-arm64, and a static
# arm64 busybox (the guest's init and the initramfs's) with systemd-boot's BOOTAA64 binary
# under arm64-userland. mmdebstrap's extract variant unpacks the packages (and what they
# depend on) as dpkg-deb -x does, running no maintainer script: no qemu-user or binfmt.
fetch_arm64() { # PACKAGES DIR CHECK
  local dir=$assets/$2
  [ -e "$dir/$3" ] && return 0
  $sudo rm -rf "$dir"
  $sudo mkdir -p "$(dirname "$dir")"
  $sudo mmdebstrap --quiet --mode=root --variant=extract --arch=arm64 --include="$1" bookworm "$dir" ||
    { echo "setup: mmdebstrap could not extract $1 for arm64" >&2; exit 1; }
  [ -e "$dir/$3" ] || { echo "setup: $dir/$3 is missing after extracting $1" >&2; exit 1; }
}
fetch_arm64 linux-image-cloud-arm64 kernel/cloud-arm64 boot
ls "$assets"/kernel/cloud-arm64/boot/vmlinuz-* >/dev/null 2>&1 || { echo "setup: no arm64 kernel" >&2; exit 1; }
fetch_arm64 busybox-static,systemd-boot-efi arm64-userland usr/lib/systemd/boot/efi/systemd-bootaa64.efi
[ -e /usr/lib/grub/i386-pc/boot.img ] || { echo "setup: grub-pc-bin's i386-pc images are missing after install" >&2; exit 1; }

command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
# cargo-deb builds the Debian package (scripts/deb.sh, tests/integration/packaging.rs);
# pinned. Building it takes about 2 min on 2 cores (97 s of CPU, measured).
CARGO_DEB_VERSION=3.8.0
cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION" ||
  cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION"
cargo deb --version >/dev/null 2>&1 || { echo "setup: cargo-deb is missing after install" >&2; exit 1; }
# cargo-auditable builds the Rust binary whose `.dep-v0` section inspect reads
# (tests/integration/inspect.rs); pinned. Building it took 27 s on 2 cores (34 s of CPU).
CARGO_AUDITABLE_VERSION=0.7.7
# It prints no version of its own (`cargo auditable --version` is cargo's), so one already
# on PATH is kept, whichever version it is.
command -v cargo-auditable >/dev/null ||
  cargo install --locked --quiet "cargo-auditable@$CARGO_AUDITABLE_VERSION"
command -v cargo-auditable >/dev/null || { echo "setup: cargo-auditable is missing after install" >&2; exit 1; }
echo "setup: $(qemu-img --version | head -1); $(mke2fs -V 2>&1 | head -1); $(cargo --version)"
