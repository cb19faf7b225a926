#!/usr/bin/env bash
# diskcast's jobs on examples made here, each judged by a reference tool:
#   1. a disk conversion: qemu-img makes a qcow2, diskcast converts it, qemu-img compare/check judge;
#   2. a container image (made by umoci from a busybox root) turned into a VM disk by
#      `diskcast vm` and booted under QEMU/OVMF: its init prints a marker on the console;
#   3. an ISO made by xorriso extracted by `diskcast extract`, judged by `diff -r`;
#   4. a USB stick image made by `diskcast usb` from that ISO, judged by sgdisk and fsck.fat.
# Installs the tools first (scripts/setup.sh), builds a release diskcast unless DISKCAST
# names a binary to use (the test suite passes its own). Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -n "${DISKCAST:-}" ]; then
  dc=$DISKCAST
else
  cargo build --release --locked -q -p diskcast
  # Wherever cargo puts it: CARGO_TARGET_DIR, build.target-dir in a config, or ./target.
  target_dir=$(cargo metadata --format-version 1 --no-deps --locked | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
  dc="$target_dir/release/diskcast"
fi
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
step() { printf '\n== %s\n' "$*"; }
ok() { printf 'OK: %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "1. convert a qcow2 (made by qemu-img, data written by qemu-io) to raw and to zstd qcow2"
qemu-img create -q -f qcow2 "$w/disk.qcow2" 256M
qemu-io -f qcow2 -c 'write -P 0xab 1M 3M' -c 'write -z 8M 2M' -c 'write -P 0x5c 100M 512k' "$w/disk.qcow2" >/dev/null
run "$dc" convert -O raw "$w/disk.qcow2" "$w/disk.raw"
run "$dc" convert -c -O qcow2 -o compression_type=zstd "$w/disk.raw" "$w/small.qcow2"
run qemu-img compare "$w/disk.qcow2" "$w/small.qcow2"
run qemu-img check "$w/small.qcow2"
ok "qemu-img compare: same guest content; qemu-img check: no errors"

step "2. a container image as a bootable VM disk, booted under QEMU"
marker=DISKCAST_DEMO_BOOTED
root="$w/rootfs"
mkdir -p "$root"/{bin,sbin,etc,dev,proc,sys,tmp}
cp /bin/busybox "$root/bin/busybox"
for a in sh mount poweroff sync uname echo; do ln -s busybox "$root/bin/$a"; done
printf '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\nexec >/dev/console 2>&1\necho "%s kernel=$(/bin/busybox uname -r)"\n/bin/busybox sync\n/bin/busybox poweroff -f\n' \
  "$marker" >"$root/sbin/init"
chmod 755 "$root/sbin/init"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
image="$w/oci:demo"
umoci init --layout "$w/oci" >/dev/null
umoci new --image "$image"
umoci insert --rootless --image "$image" "$root" / >/dev/null
umoci config --image "$image" --config.entrypoint /bin/sh --os linux --architecture amd64
kernel=$(ls "${DISKCAST_TEST_ASSETS:-/var/cache/diskcast-tests}"/kernel/cloud-amd64/boot/vmlinuz-* | head -1)
run "$dc" vm "oci:$image" -o "$w/vm.qcow2" --kernel "$kernel"
run qemu-img check -q "$w/vm.qcow2"
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$w/vars.fd"
printf '$ qemu-system-x86_64 (q35, OVMF, TCG, the disk on NVMe) ... | grep %s\n' "$marker"
timeout 180 qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nodefaults -display none -no-reboot \
  -serial stdio -monitor none \
  -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
  -drive "if=pflash,format=raw,unit=1,file=$w/vars.fd" \
  -drive "file=$w/vm.qcow2,format=qcow2,if=none,id=d0,snapshot=on" -device nvme,drive=d0,serial=demo \
  </dev/null >"$w/console.log" 2>&1 || true
grep -a "$marker" "$w/console.log" || { tail -20 "$w/console.log"; echo "demo: the VM did not print $marker" >&2; exit 1; }
ok "the VM booted (systemd-boot, the kernel, the image's /sbin/init) and printed the marker"

step "3. an ISO made by xorriso, extracted by diskcast, compared by diff -r"
tree="$w/tree"
mkdir -p "$tree/docs/deep/er" "$tree/EFI/BOOT"
echo "hello from the demo ISO" >"$tree/README.txt"
head -c 1500000 /dev/urandom >"$tree/docs/random.bin"
echo deep >"$tree/docs/deep/er/file.txt"
ln -s ../README.txt "$tree/docs/link"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$tree/EFI/BOOT/BOOTX64.EFI"
run xorriso -as mkisofs -quiet -R -J -V DEMO -o "$w/demo.iso" "$tree"
run "$dc" extract "$w/demo.iso" "$w/extracted"
run diff -r --no-dereference "$tree" "$w/extracted"
ok "diff -r: the extracted tree is the one xorriso packed"

step "4. a USB stick image from the ISO, checked by sgdisk and fsck.fat"
run "$dc" usb "$w/demo.iso" -o "$w/stick.img" --mode fat32
run sgdisk -v "$w/stick.img"
start=$(sgdisk -i 1 "$w/stick.img" | awk '/^First sector:/{print $3}')
end=$(sgdisk -i 1 "$w/stick.img" | awk '/^Last sector:/{print $3}')
dd if="$w/stick.img" of="$w/part1.img" bs=512 skip="$start" count=$((end - start + 1)) status=none
run fsck.fat -n "$w/part1.img"
mcopy -n -i "$w/part1.img" ::/README.txt "$w/readme-from-stick.txt"
run cmp "$tree/README.txt" "$w/readme-from-stick.txt"
ok "sgdisk -v and fsck.fat -n: clean; README.txt on the stick is the ISO's"

printf '\ndemo: all 4 jobs done, each judged by its reference tool\n'
