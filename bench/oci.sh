#!/bin/bash
# OCI flatten benchmark (not a test): a 3-layer image of about SIZE_MB MiB uncompressed,
# made with umoci, unpacked three ways, RUNS timed runs each (after one warm-up, a sync
# before each):
#   diskcast extract oci:IMG:t DIR
#   umoci unpack --rootless --image IMG:t BUNDLE
#   skopeo copy oci:IMG:t dir:D, then tar -x of each layer in order (no whiteouts applied)
# Prints the median seconds of each, the spread, and the ratio to umoci. Run it on a quiet machine.
# Env: SIZE_MB (1024), RUNS (3), WORK (bench/work/oci), DISKCAST (target/release/diskcast),
# TARGET_DIR (where unpacked trees go; default /dev/shm when it has room, see lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}; WORK=${WORK:-bench/work/oci}
# shellcheck source=bench/lib.sh
. bench/lib.sh
mkdir -p "$WORK"; IMG=$WORK/img
if [ ! -f "$IMG/index.json" ] || [ "$(cat "$WORK/size" 2>/dev/null)" != "$SIZE_MB" ]; then
  rm -rf "$IMG" "$WORK/layers"; umoci init --layout "$IMG" >/dev/null; umoci new --image "$IMG:t"
  for l in 1 2 3; do
    D=$WORK/layers/l$l; mkdir -p "$D"
    # Half-compressible files (base64 of random bytes) from 4 KiB to 4 MiB, a third each.
    half_compressible "$D" $((SIZE_MB / 3)) "$l"
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
# Every output holds the last layer's files.
measure "diskcast extract" 'rm -rf "$T/out"' '[ -d "$T/out/layer3" ]' "$DISKCAST" extract "oci:$IMG:t" "$T/out"
measure "umoci unpack --rootless" 'rm -rf "$T/bundle"' '[ -d "$T/bundle/rootfs/layer3" ]' \
  umoci unpack --rootless --image "$IMG:t" "$T/bundle"
measure "skopeo copy + tar -x" 'rm -rf "$WORK/dir" "$T/tarx"' '[ -d "$T/tarx/layer3" ]' skopeo_tar
printf 'size %s MiB, %s runs\n' "$SIZE_MB" "$RUNS"
echo "diskcast extract / umoci unpack = $(ratio "diskcast extract" "umoci unpack --rootless") (goal <= 0.5)"
echo "skopeo copy + tar -x / umoci unpack = $(ratio "skopeo copy + tar -x" "umoci unpack --rootless")"
rm -rf "$T/out" "$T/bundle" "$WORK/dir" "$T/tarx"
