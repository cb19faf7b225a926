#!/usr/bin/env bash
# diskcast mkfs ext4 vs mke2fs -d (+ qemu-img convert for qcow2): median wall time, its
# spread, and output size for one tree. A benchmark, not a test: CI does not run it.
#
#   bench/ext4.sh                   # a ~2 GiB copy of /usr/lib, 3 timed runs each
#   TREE_MB=512 RUNS=5 bench/ext4.sh
#
# Knobs (environment):
#   TREE_MB=2048   how much of /usr/lib to copy into the source tree (reused if present)
#   RUNS=3         timed runs per command (after one uncounted warm-up run of each), a
#                  sync before each
#   DISKCAST=      use this binary instead of building target/release/diskcast
#   WORK=          work directory (default bench/work/ext4, gitignored)
#
# Both tools build the same size of filesystem (diskcast's automatic size, read from its
# first output) with the same source, warm in the page cache. Every output is checked
# with e2fsck -fn before its time counts.
set -euo pipefail
export LC_ALL=C
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK=${WORK:-$BENCH_ROOT/bench/work/ext4}
TREE_MB=${TREE_MB:-2048}
mkdir -p "$WORK"

SRC=$WORK/tree-$TREE_MB
if [ ! -d "$SRC" ]; then
    echo "copying about $TREE_MB MiB of /usr/lib into $SRC"
    mkdir -p "$SRC.part"
    used=0
    for d in /usr/lib/*; do
        [ "$used" -ge "$TREE_MB" ] && break
        cp -a "$d" "$SRC.part/" 2>/dev/null || true
        used=$(du -sm "$SRC.part" | cut -f1)
    done
    mv "$SRC.part" "$SRC"
fi
echo "source: $SRC ($(du -sh "$SRC" | cut -f1), $(find "$SRC" | wc -l) entries)"

OUT=$WORK/out
rm -rf "$OUT" && mkdir -p "$OUT"
"$DISKCAST" mkfs ext4 "$SRC" -o "$OUT/probe.raw" >/dev/null 2>&1
SIZE_BYTES=$(stat -c %s "$OUT/probe.raw")
rm -f "$OUT/probe.raw"
echo "filesystem size: $((SIZE_BYTES >> 20)) MiB"

# Every output must pass e2fsck -fn (a qcow2 through a raw copy).
fsck_ok() {
    local img=$1 raw=$1
    if [[ $img == *.qcow2 ]]; then
        raw=$OUT/check.raw
        qemu-img convert -O raw "$img" "$raw"
    fi
    e2fsck -fn "$raw" >/dev/null 2>&1 || { echo "e2fsck -fn failed on $img" >&2; return 1; }
    [ "$raw" = "$img" ] || rm -f "$raw"
}

mke2fs_raw() { mke2fs -q -F -t ext4 -d "$SRC" "$OUT/m.raw" "$((SIZE_BYTES / 1024))k"; }
mke2fs_qcow2() {
    mke2fs_raw
    qemu-img convert -O qcow2 "$OUT/m.raw" "$OUT/m.qcow2"
    rm -f "$OUT/m.raw"
}
measure "mke2fs -d (raw)" 'rm -f "$OUT/m.raw"' 'fsck_ok "$OUT/m.raw"' mke2fs_raw
measure "diskcast mkfs (raw)" 'rm -f "$OUT/d.raw"' 'fsck_ok "$OUT/d.raw"' \
    "$DISKCAST" mkfs ext4 "$SRC" -o "$OUT/d.raw" --size "$SIZE_BYTES"
measure "mke2fs -d + qemu-img (qcow2)" 'rm -f "$OUT/m.qcow2"' 'fsck_ok "$OUT/m.qcow2"' mke2fs_qcow2
measure "diskcast mkfs (qcow2)" 'rm -f "$OUT/d.qcow2"' 'fsck_ok "$OUT/d.qcow2"' \
    "$DISKCAST" mkfs ext4 "$SRC" -O qcow2 -o "$OUT/d.qcow2" --size "$SIZE_BYTES"
for f in d.raw m.raw d.qcow2 m.qcow2; do
    [ -e "$OUT/$f" ] && printf '%-10s %6d MiB allocated\n' "$f" "$(($(du -k "$OUT/$f" | cut -f1) / 1024))"
done
echo "raw:   diskcast / mke2fs -d = $(ratio "diskcast mkfs (raw)" "mke2fs -d (raw)") (goal <= 0.5)"
echo "qcow2: diskcast / (mke2fs -d + qemu-img convert) = $(ratio "diskcast mkfs (qcow2)" "mke2fs -d + qemu-img (qcow2)") (goal <= 0.5)"
echo "nproc $(nproc), $(mke2fs -V 2>&1 | head -1), diskcast $(cd "$BENCH_ROOT" && git rev-parse --short HEAD)"
