#!/bin/bash
# diskcast vm benchmark (not a test): an OCI image -> a bootable UEFI qcow2, against the
# pipeline a user scripts today, RUNS timed runs each (after one warm-up, a sync before each):
#   diskcast vm oci:IMG:t -o OUT.qcow2 -O qcow2 --kernel K
#   umoci unpack --rootless + mke2fs -t ext4 -d ROOTFS + mkfs.fat -F 32 / mmd / mcopy (ESP
#   with systemd-boot, loader entry, kernel) + sgdisk + dd of both partitions into a raw
#   disk + qemu-img convert -O qcow2
# The image is the busybox guest of the tests (3 layers, the last a whiteout) plus, with
# FILL_MB > 0, a layer of FILL_MB MiB of half-compressible files, so the ratio can be seen
# on something larger than busybox. Prints the medians, spread and the ratio.
# Env: FILL_MB (0), RUNS (3), WORK (bench/work/vm), DISKCAST (target/release/diskcast),
#      KERNEL (the test kernel under /var/cache/diskcast-tests),
#      IMAGE (an OCI layout DIR:TAG to use instead of the busybox image, e.g. a Debian
#      image made with mmdebstrap + `umoci raw add-layer`)
set -euo pipefail
cd "$(dirname "$0")/.."
FILL_MB=${FILL_MB:-0}; WORK=${WORK:-bench/work/vm}
KERNEL=${KERNEL:-$(ls /var/cache/diskcast-tests/kernel/cloud-amd64/boot/vmlinuz-* | head -1)}
LOADER=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
# shellcheck source=bench/lib.sh
. bench/lib.sh
[ -f "$KERNEL" ] || { echo "no kernel: run scripts/setup.sh or set KERNEL" >&2; exit 1; }
mkdir -p "$WORK"; IMG=$WORK/img; REF=$IMG:t
if [ -n "${IMAGE:-}" ]; then
  REF=$IMAGE
elif [ ! -f "$IMG/index.json" ] || [ "$(cat "$WORK/fill" 2>/dev/null)" != "$FILL_MB" ]; then
  rm -rf "$IMG" "$WORK/l1" "$WORK/init"
  umoci init --layout "$IMG" >/dev/null; umoci new --image "$IMG:t"
  R=$WORK/l1; mkdir -p "$R"/{bin,sbin,etc,dev,proc,sys,tmp,root}
  cp /bin/busybox "$R/bin/"; for a in sh ls cat mount poweroff sync uname; do ln -s busybox "$R/bin/$a"; done
  echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"; echo gone > "$R/etc/removed-later"
  umoci insert --rootless --image "$IMG:t" "$R" / >/dev/null
  printf '#!/bin/busybox sh\n/bin/busybox poweroff -f\n' > "$WORK/init"; chmod 755 "$WORK/init"
  umoci insert --rootless --image "$IMG:t" "$WORK/init" /sbin/init >/dev/null
  umoci insert --rootless --image "$IMG:t" --whiteout /etc/removed-later >/dev/null
  if [ "$FILL_MB" -gt 0 ]; then
    D=$WORK/fill; rm -rf "$D"; mkdir -p "$D"
    half_compressible "$D" "$FILL_MB" 7
    umoci insert --rootless --image "$IMG:t" "$D" /srv/data >/dev/null; rm -rf "$D"
  fi
  umoci gc --layout "$IMG"; rm -rf "$WORK/l1" "$WORK/init"; echo "$FILL_MB" > "$WORK/fill"
fi

# The scripted pipeline, as a user would write it (the same layout diskcast writes).
pipeline() {
  local W=$WORK/pipe; rm -rf "$W"; mkdir -p "$W"
  umoci unpack --rootless --image "$REF" "$W/bundle" >/dev/null
  local mb; mb=$(du -sm "$W/bundle/rootfs" | cut -f1); mb=$((mb + mb / 4 + 16))
  mke2fs -q -F -t ext4 -L root -d "$W/bundle/rootfs" "$W/root.img" "${mb}M"
  mkfs.fat -F 32 -n ESP -C "$W/esp.img" $((64 * 1024)) >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$W/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/diskcast
  mcopy -i "$W/esp.img" "$LOADER" ::/EFI/BOOT/BOOTX64.EFI
  printf 'default diskcast.conf\ntimeout 0\neditor no\n' > "$W/loader.conf"
  printf 'title bench\nlinux /diskcast/vmlinuz\noptions root=PARTUUID=6b2e0c53-1c3e-4e0a-9a51-0c4f0d5e7a11 rw console=ttyS0\n' > "$W/entry.conf"
  mcopy -i "$W/esp.img" "$W/loader.conf" ::/loader/loader.conf
  mcopy -i "$W/esp.img" "$W/entry.conf" ::/loader/entries/diskcast.conf
  mcopy -i "$W/esp.img" "$KERNEL" ::/diskcast/vmlinuz
  truncate -s $((1 + 64 + mb + 1))M "$W/disk.raw"
  sgdisk -o -n 1:1MiB:+64MiB -t 1:EF00 -c 1:esp -n 2:0:+${mb}MiB -t 2:8304 -c 2:root \
    -u 2:6b2e0c53-1c3e-4e0a-9a51-0c4f0d5e7a11 "$W/disk.raw" >/dev/null
  dd if="$W/esp.img" of="$W/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$W/root.img" of="$W/disk.raw" bs=1M seek=65 conv=notrunc,sparse status=none
  qemu-img convert -O qcow2 "$W/disk.raw" "$WORK/pipe.qcow2"
  rm -rf "$W"
}

measure "diskcast vm" 'rm -f "$WORK/dc.qcow2"' 'qemu-img check -q "$WORK/dc.qcow2"' \
  "$DISKCAST" vm "oci:$REF" -o "$WORK/dc.qcow2" -O qcow2 --kernel "$KERNEL" --progress none
measure "umoci+mke2fs+mtools+sgdisk+qemu-img" 'rm -f "$WORK/pipe.qcow2"' 'qemu-img check -q "$WORK/pipe.qcow2"' pipeline
printf 'image: %s, %s runs\n' "${IMAGE:-busybox + $FILL_MB MiB}" "$RUNS"
echo "diskcast vm / scripted pipeline = $(ratio "diskcast vm" "umoci+mke2fs+mtools+sgdisk+qemu-img") (goal <= 0.33)"
/usr/bin/time -f "diskcast vm peak memory: %M KiB" "$DISKCAST" vm "oci:$REF" -o "$WORK/dc.qcow2" -O qcow2 --kernel "$KERNEL" --progress none 2>&1 | tail -1
rm -f "$WORK/dc.qcow2" "$WORK/pipe.qcow2"
