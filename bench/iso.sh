#!/usr/bin/env bash
# diskcast against bsdtar and xorriso on ISO 9660: extracting a disc and creating one from
# a directory. Median wall time of each over RUNS runs, and its spread. A benchmark, not a test: CI does not run it.
#
#   bench/iso.sh                       # a ~2 GiB tree: many small files and a few big ones
#   TREE_MB=512 RUNS=5 bench/iso.sh
#
# Knobs (environment):
#   TREE_MB=2048   size of the source tree (reused if present): half in 4 big random files,
#                  half in small files (copied from /usr/lib, then padded with random ones)
#   RUNS=3         timed runs per command (after one uncounted warm-up run of each), a
#                  sync before each
#   DISKCAST=      use this binary instead of building target/release/diskcast
#   WORK=          work directory (default bench/work/iso, gitignored)
#   TARGET_DIR=    where extractions go (default: /dev/shm when it has room; see lib.sh)
#
# Extraction: the same ISO (made by xorriso, Rock Ridge + Joliet) extracted by
# `diskcast extract`, `bsdtar -xf` and `xorriso -osirrox on -extract`; every output is
# compared with the source (file list and content) before its time counts.
# Creation: `diskcast iso create` against `xorriso -as mkisofs -R -J`; each output is
# listed by `xorriso -find` and must hold every file.
set -euo pipefail
export LC_ALL=C
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK=${WORK:-$BENCH_ROOT/bench/work/iso}
TREE_MB=${TREE_MB:-2048}
mkdir -p "$WORK"

SRC=$WORK/tree-$TREE_MB
if [ ! -d "$SRC" ]; then
    echo "building a $TREE_MB MiB tree in $SRC"
    mkdir -p "$SRC.part/big" "$SRC.part/small"
    big=$((TREE_MB / 2 / 4))
    for i in 1 2 3 4; do head -c "${big}M" /dev/urandom > "$SRC.part/big/file$i.bin"; done
    used=0
    for d in /usr/lib/*; do
        [ "$used" -ge $((TREE_MB / 2)) ] && break
        cp -a "$d" "$SRC.part/small/" 2>/dev/null || true
        used=$(du -sm "$SRC.part/small" | cut -f1)
    done
    # Whatever /usr/lib did not fill: 64 KiB random files.
    i=0
    while [ "$(du -sm "$SRC.part/small" | cut -f1)" -lt $((TREE_MB / 2)) ]; do
        mkdir -p "$SRC.part/small/pad$((i / 1000))"
        head -c 65536 /dev/urandom > "$SRC.part/small/pad$((i / 1000))/f$i"
        i=$((i + 1))
    done
    mv "$SRC.part" "$SRC"
fi
files=$(find "$SRC" -type f | wc -l)
echo "tree: $(du -sh "$SRC" | cut -f1), $files files"

ISO=$WORK/input.iso
[ -f "$ISO" ] || xorriso -as mkisofs -quiet -R -J -joliet-long -o "$ISO" "$SRC"
OUT=$(target_dir "$(du -sm "$SRC" | cut -f1)" "$WORK")/out
mkdir -p "$(dirname "$OUT")"
echo "extracting into $OUT"
same_tree='diff -r --no-dereference "$SRC" "$OUT" >/dev/null'
CLEAN='rm -rf "$OUT"'

echo "== extract $(du -h "$ISO" | cut -f1) ISO"
measure "diskcast extract" 'rm -rf "$OUT"' "$same_tree" "$DISKCAST" extract "$ISO" "$OUT"
measure "bsdtar -xf" 'rm -rf "$OUT"; mkdir -p "$OUT"' "$same_tree" bsdtar -xf "$ISO" -C "$OUT"
measure "xorriso -osirrox on -extract" 'rm -rf "$OUT"' "$same_tree" xorriso -osirrox on -indev "$ISO" -extract / "$OUT"

echo "== create from the tree"
NEW=$WORK/new.iso
has_all='[ "$(xorriso -indev "$NEW" -find / -type f 2>/dev/null | wc -l)" = "$files" ]'
measure "diskcast iso create" 'rm -f "$NEW"' "$has_all" "$DISKCAST" iso create "$SRC" -o "$NEW"
measure "xorriso -as mkisofs -R -J" 'rm -f "$NEW"' "$has_all" xorriso -as mkisofs -quiet -R -J -joliet-long -o "$NEW" "$SRC"
rm -rf "$OUT" "$NEW"

best=$(ratio "bsdtar -xf" "xorriso -osirrox on -extract")
other="xorriso -osirrox on -extract"
[ "$(echo "$best < 1" | bc)" = 1 ] && other="bsdtar -xf"
printf '\nextract: diskcast / %s = %s (goal <= 0.5)\n' "$other" "$(ratio "diskcast extract" "$other")"
printf 'create:  diskcast / xorriso = %s (goal <= 0.5)\n' "$(ratio "diskcast iso create" "xorriso -as mkisofs -R -J")"
