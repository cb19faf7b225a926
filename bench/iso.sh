#!/usr/bin/env bash
# diskcast against bsdtar and xorriso on ISO 9660: extracting a disc and creating one from
# a directory. Wall time of each, best of RUNS. A benchmark, not a test: CI does not run it.
#
#   bench/iso.sh                       # a ~2 GiB tree: many small files and a few big ones
#   TREE_MB=512 RUNS=3 bench/iso.sh
#
# Knobs (environment):
#   TREE_MB=2048   size of the source tree (reused if present): half in 4 big random files,
#                  half in small files (copied from /usr/lib, then padded with random ones)
#   RUNS=1         timed runs per command (after one uncounted warm-up run of each)
#   DISKCAST=      use this binary instead of building target/release/diskcast
#   WORK=          work directory (default bench/work/iso, gitignored)
#
# Extraction: the same ISO (made by xorriso, Rock Ridge + Joliet) extracted by
# `diskcast extract`, `bsdtar -xf` and `xorriso -osirrox on -extract`; every output is
# compared with the source (file list and content) before its time counts.
# Creation: `diskcast iso create` against `xorriso -as mkisofs -R -J`; each output is
# listed by `xorriso -find` and must hold every file.
set -euo pipefail
export LC_ALL=C
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=${WORK:-$BENCH_DIR/work/iso}
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

# best_of NAME CHECK CMD...: runs CMD once untimed then RUNS times, prints the best wall time.
best_of() {
    local name=$1 check=$2; shift 2
    local best=
    for r in $(seq 0 "$RUNS"); do
        eval "$CLEAN"
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        eval "$check" || { echo "FAIL: $name produced a wrong result" >&2; exit 1; }
        [ "$r" = 0 ] && continue
        local t
        t=$(echo "$t1 - $t0" | bc)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
    done
    printf '%-34s %8.2f s\n' "$name" "$best" >&2
    echo "$best"
}

ISO=$WORK/input.iso
[ -f "$ISO" ] || xorriso -as mkisofs -quiet -R -J -joliet-long -o "$ISO" "$SRC"
OUT=$WORK/out
same_tree='diff -r --no-dereference "$SRC" "$OUT" >/dev/null'
CLEAN='rm -rf "$OUT"'

echo "== extract $(du -h "$ISO" | cut -f1) ISO"
r_dc=$(best_of "diskcast extract" "$same_tree" "$DISKCAST" extract "$ISO" "$OUT" | tail -1)
CLEAN='rm -rf "$OUT"; mkdir -p "$OUT"'
r_bsd=$(best_of "bsdtar -xf" "$same_tree" bsdtar -xf "$ISO" -C "$OUT" | tail -1)
CLEAN='rm -rf "$OUT"'
r_xo=$(best_of "xorriso -osirrox on -extract" "$same_tree" xorriso -osirrox on -indev "$ISO" -extract / "$OUT" | tail -1)

echo "== create from the tree"
NEW=$WORK/new.iso
CLEAN='rm -f "$NEW"'
has_all='[ "$(xorriso -indev "$NEW" -find / -type f 2>/dev/null | wc -l)" = "$files" ]'
c_dc=$(best_of "diskcast iso create" "$has_all" "$DISKCAST" iso create "$SRC" -o "$NEW" | tail -1)
c_xo=$(best_of "xorriso -as mkisofs -R -J" "$has_all" xorriso -as mkisofs -quiet -R -J -joliet-long -o "$NEW" "$SRC" | tail -1)
rm -rf "$OUT" "$NEW"

best_ext=$(printf '%s\n%s\n' "$r_bsd" "$r_xo" | sort -g | head -1)
printf '\nextract: diskcast %.2f s, best other %.2f s, ratio %.2f (goal <= 0.5)\n' "$r_dc" "$best_ext" "$(echo "$r_dc / $best_ext" | bc -l)"
printf 'create:  diskcast %.2f s, xorriso %.2f s, ratio %.2f (goal <= 0.5)\n' "$c_dc" "$c_xo" "$(echo "$c_dc / $c_xo" | bc -l)"
