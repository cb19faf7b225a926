#!/usr/bin/env bash
# diskcast mkfs ext4 vs mke2fs -d (+ qemu-img convert for qcow2): wall time and output
# size for one tree. A benchmark, not a test: CI does not run it.
#
#   bench/ext4.sh                   # a ~2 GiB copy of /usr/lib, 1 timed run each
#   TREE_MB=512 RUNS=3 bench/ext4.sh
#
# Knobs (environment):
#   TREE_MB=2048   how much of /usr/lib to copy into the source tree (reused if present)
#   RUNS=1         timed runs per command (after one uncounted warm-up run of each)
#   DISKCAST=      use this binary instead of building target/release/diskcast
#   WORK=          work directory (default bench/work/ext4, gitignored)
#
# Both tools build the same size of filesystem (diskcast's automatic size, read from its
# first output) with the same source, warm in the page cache. Every output is checked
# with e2fsck -fn before its time counts.
set -euo pipefail
export LC_ALL=C
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=${WORK:-$BENCH_DIR/work/ext4}
TREE_MB=${TREE_MB:-2048}
RUNS=${RUNS:-1}
DISKCAST=${DISKCAST:-}
mkdir -p "$WORK"

if [ -z "$DISKCAST" ]; then
    (cd "$ROOT" && cargo build --release -q -p diskcast)
    DISKCAST=$ROOT/target/release/diskcast
fi

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

seconds() { # runs "$@", prints wall seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

declare -A BEST
run() { # name, check-image, command...
    local name=$1 img=$2 && shift 2
    seconds "$@" >/dev/null # warm-up
    local best=
    for _ in $(seq "$RUNS"); do
        rm -f "$img"
        local s
        s=$(seconds "$@")
        if [ -z "$best" ] || (($(echo "$s < $best" | bc -l))); then best=$s; fi
    done
    local raw=$img
    if [[ $img == *.qcow2 ]]; then
        raw=$OUT/check.raw
        qemu-img convert -O raw "$img" "$raw"
    fi
    e2fsck -fn "$raw" >/dev/null 2>&1 || { echo "e2fsck -fn failed on $name's output" >&2; exit 1; }
    [ "$raw" != "$img" ] && rm -f "$raw"
    BEST[$name]=$best
    printf '%-28s %8.2f s  %8d MiB on disk\n' "$name" "$best" "$(($(du -k "$img" | cut -f1) / 1024))"
}

mke2fs_raw() { rm -f "$OUT/m.raw"; mke2fs -q -F -t ext4 -d "$SRC" "$OUT/m.raw" "$((SIZE_BYTES / 1024))k"; }
mke2fs_qcow2() {
    mke2fs_raw
    qemu-img convert -O qcow2 "$OUT/m.raw" "$OUT/m.qcow2"
    rm -f "$OUT/m.raw"
}
run "mke2fs -d (raw)" "$OUT/m.raw" mke2fs_raw
run "diskcast mkfs (raw)" "$OUT/d.raw" "$DISKCAST" mkfs ext4 "$SRC" -o "$OUT/d.raw" --size "$SIZE_BYTES"
run "mke2fs -d + qemu-img (qcow2)" "$OUT/m.qcow2" mke2fs_qcow2
run "diskcast mkfs (qcow2)" "$OUT/d.qcow2" "$DISKCAST" mkfs ext4 "$SRC" -O qcow2 -o "$OUT/d.qcow2" --size "$SIZE_BYTES"

for f in raw qcow2; do
    m=${BEST["mke2fs -d (raw)"]}
    [ $f = qcow2 ] && m=${BEST["mke2fs -d + qemu-img (qcow2)"]}
    d=${BEST["diskcast mkfs ($f)"]}
    printf '%s: diskcast / mke2fs = %.2f (goal <= 0.5)\n' "$f" "$(echo "$d / $m" | bc -l)"
done
echo "nproc $(nproc), $(mke2fs -V 2>&1 | head -1), diskcast $(cd "$ROOT" && git rev-parse --short HEAD)"
