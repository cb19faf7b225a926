#!/bin/bash
# OCI flatten benchmark (not a test): a LAYERS-layer image (3 by default) of about SIZE_MB
# MiB uncompressed, made with umoci, unpacked three ways, RUNS timed rounds (after one
# warm-up round; a sync before each run; the tools alternate within a round):
#   diskcast extract oci:IMG:t DIR
#   umoci unpack --rootless --image IMG:t BUNDLE
#   skopeo copy oci:IMG:t dir:D, then tar -x of each layer in order (no whiteouts applied)
# Prints the median seconds of each, the spread, and the ratio to umoci. Run it on a quiet machine.
# Env: SIZE_MB (1024), LAYERS (3; LAYERS=1 is the one large gzip layer of
# docs/performance.md), RUNS (3), WORK (bench/work/oci-LAYERS), DISKCAST
# (target/release/diskcast), TARGET_DIR (where unpacked trees go; default /dev/shm when it
# has room, see lib.sh), SKOPEO (1; 0 leaves out skopeo copy + tar -x)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}; LAYERS=${LAYERS:-3}; SKOPEO=${SKOPEO:-1}; WORK=${WORK:-bench/work/oci-$LAYERS}
# shellcheck source=bench/lib.sh
. bench/lib.sh
mkdir -p "$WORK"; IMG=$WORK/img
if [ ! -f "$IMG/index.json" ] || [ "$(cat "$WORK/size" 2>/dev/null)" != "$SIZE_MB" ]; then
  rm -rf "$IMG" "$WORK/layers"; umoci init --layout "$IMG" >/dev/null; umoci new --image "$IMG:t"
  for l in $(seq 1 "$LAYERS"); do
    D=$WORK/layers/l$l; mkdir -p "$D"
    # Half-compressible files (base64 of random bytes) from 4 KiB to 4 MiB, a share each.
    half_compressible "$D" $((SIZE_MB / LAYERS)) "$l"
    umoci insert --image "$IMG:t" "$D" "/layer$l" >/dev/null
  done
  rm -rf "$WORK/layers"; echo "$SIZE_MB" > "$WORK/size"
fi
T=$(target_dir $((SIZE_MB * 2)) "$WORK")
mkdir -p "$T"; echo "unpacking into $T"
skopeo_tar() {
  skopeo copy --quiet "oci:$IMG:t" "dir:$WORK/dir"
  mkdir -p "$T/tarx"
  for l in $(/usr/bin/python3 -c 'import json,sys; [print(x["digest"].split(":")[1]) for x in json.load(open(sys.argv[1]))["layers"]]' "$WORK/dir/manifest.json"); do
    tar -xzf "$WORK/dir/$l" -C "$T/tarx"
  done
}
# The tools alternate within a round (the order rotates each round), so load from other
# work hits all of them; a sync before each run; round 0 is a warm-up whose outputs (and
# the last round's) are checked. Each round prints its load average and its ratio.
LAST=layer$LAYERS
NAMES=("diskcast extract" "umoci unpack --rootless"); [ "$SKOPEO" = 1 ] && NAMES+=("skopeo copy + tar -x")
one() { # NAME: clean, sync, run timed; prints the seconds
  case $1 in
    "diskcast extract") rm -rf "$T/out"; sync; t0=$(date +%s.%N)
      "$DISKCAST" extract "oci:$IMG:t" "$T/out" >/dev/null 2>&1 || { echo "FAIL: diskcast" >&2; exit 1; } ;;
    "umoci unpack --rootless") rm -rf "$T/bundle"; sync; t0=$(date +%s.%N)
      umoci unpack --rootless --image "$IMG:t" "$T/bundle" >/dev/null 2>&1 || { echo "FAIL: umoci" >&2; exit 1; } ;;
    *) rm -rf "$WORK/dir" "$T/tarx"; sync; t0=$(date +%s.%N); skopeo_tar >/dev/null 2>&1 || { echo "FAIL: skopeo" >&2; exit 1; } ;;
  esac
  echo "$(date +%s.%N) - $t0" | bc
}
check() { # Every output holds the last layer's files.
  [ -d "$T/out/$LAST" ] && [ -d "$T/bundle/rootfs/$LAST" ] && { [ "$SKOPEO" != 1 ] || [ -d "$T/tarx/$LAST" ]; } ||
    { echo "FAIL: an output lacks /$LAST" >&2; exit 1; }
}
alternate "diskcast extract" "umoci unpack --rootless" "${NAMES[@]}"
printf 'size %s MiB, %s layers, %s rounds\n' "$SIZE_MB" "$LAYERS" "$RUNS"
echo "diskcast extract / umoci unpack = $(ratio "diskcast extract" "umoci unpack --rootless") of medians; per round $(ratio_range) (goal <= 0.5 on 3 layers, <= 0.15 on one)"
[ "$SKOPEO" = 1 ] && echo "skopeo copy + tar -x / umoci unpack = $(ratio "skopeo copy + tar -x" "umoci unpack --rootless")"
rm -rf "$T/out" "$T/bundle" "$WORK/dir" "$T/tarx"
