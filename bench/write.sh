#!/usr/bin/env bash
# diskcast write against `bmaptool create` + `bmaptool copy` and `dd` + `cmp`: a 2 GiB raw
# image holding about 40 % data (random bytes in runs of 1 to 64 MiB, the rest never
# written: holes) written to a file-backed target, with verification:
#
#   diskcast   diskcast write --yes IMAGE TARGET      (data only, holes zeroed by the kernel,
#                                                   O_DIRECT, fsync, then read back and compared)
#   bmaptool   bmaptool create -o IMAGE.bmap IMAGE && bmaptool copy --bmap IMAGE.bmap IMAGE TARGET
#              (data only; verifies SHA-256 checksums of what it read from the image,
#              not a read-back of the target)
#   dd+cmp     dd if=IMAGE of=TARGET bs=4M conv=notrunc,fsync && cmp IMAGE TARGET
#
# TARGET is a fresh sparse file of the image's size before each run (bmaptool leaves the
# ranges it does not map as they were, so over old bytes its result would not equal the
# image; the tests cover writing over random bytes). The tools alternate within each
# round (the order rotates every round), `sync` before each run, one uncounted warm-up
# round, then the median and spread of RUNS rounds per tool; every run's target is
# checked equal to the image with cmp. The load average is printed before and after.
# A benchmark, not a test: CI does not run it.
#
#   bench/write.sh
#   RUNS=7 SIZE_MB=4096 bench/write.sh
#
# Knobs (environment):
#   SIZE_MB=2048   image size
#   RUNS=5         rounds after the warm-up
#   DISKCAST=      use this binary instead of building target/release/diskcast
#   WORK=          work directory (default bench/work/write, gitignored); its filesystem
#                  is the one written
set -euo pipefail
export LC_ALL=C
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK=${WORK:-$BENCH_ROOT/bench/work/write}
SIZE_MB=${SIZE_MB:-2048}
RUNS=${RUNS:-5}
for t in bmaptool dd cmp qemu-img; do
    command -v "$t" >/dev/null || { echo "bench/write.sh needs $t (scripts/setup.sh installs it)" >&2; exit 1; }
done

mkdir -p "$WORK"
IMG=$WORK/image.raw
TARGET=$WORK/target.img
trap 'rm -f "$TARGET" "$IMG.bmap"' EXIT

# The image: runs of random data (1..64 MiB, seeded) with gaps, until about 40 % is data.
if [ ! -e "$IMG" ] || [ "$(stat -c %s "$IMG")" != $((SIZE_MB << 20)) ]; then
    rm -f "$IMG"
    truncate -s "${SIZE_MB}M" "$IMG"
    RANDOM=20261207
    pos=0 data=0
    while [ $((pos)) -lt "$SIZE_MB" ]; do
        len=$((1 + RANDOM % 64))
        [ $((pos + len)) -gt "$SIZE_MB" ] && len=$((SIZE_MB - pos))
        dd if=/dev/urandom of="$IMG" bs=1M seek="$pos" count="$len" conv=notrunc status=none
        data=$((data + len))
        pos=$((pos + len + len * 3 / 2))
    done
    echo "image: $SIZE_MB MiB, $data MiB data ($((data * 100 / SIZE_MB)) %)" >&2
fi
echo "image: $(du -m "$IMG" | cut -f1) MiB allocated of $SIZE_MB MiB" >&2

run_diskcast() { "$DISKCAST" write --yes "$IMG" "$TARGET"; }
run_bmaptool() { bmaptool -q create -o "$IMG.bmap" "$IMG" && bmaptool -q copy --bmap "$IMG.bmap" "$IMG" "$TARGET"; }
run_dd() { dd if="$IMG" of="$TARGET" bs=4M conv=notrunc,fsync status=none && cmp "$IMG" "$TARGET"; }

TOOLS=(diskcast bmaptool dd)
declare -A TIMES
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 0 "$RUNS"); do
    n=${#TOOLS[@]}
    for i in $(seq 0 $((n - 1))); do
        tool=${TOOLS[$(((i + round) % n))]}
        rm -f "$TARGET" "$IMG.bmap"
        truncate -s "${SIZE_MB}M" "$TARGET"
        sync
        t0=$(date +%s.%N)
        "run_$tool" >/dev/null 2>&1 || { echo "FAIL: $tool exited with an error" >&2; exit 1; }
        t1=$(date +%s.%N)
        cmp "$IMG" "$TARGET" || { echo "FAIL: $tool: the target differs from the image" >&2; exit 1; }
        [ "$round" = 0 ] && continue
        TIMES[$tool]="${TIMES[$tool]:-} $(echo "$t1 - $t0" | bc)"
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for tool in "${TOOLS[@]}"; do
    # shellcheck disable=SC2086
    summarize "$tool" ${TIMES[$tool]}
done
best=bmaptool
[ "$(echo "${MEDIAN[dd]} < ${MEDIAN[bmaptool]}" | bc)" = 1 ] && best=dd
echo "diskcast / best other ($best): $(ratio diskcast "$best") (goal: at most 0.75)" >&2
