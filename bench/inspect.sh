#!/bin/bash
# inspect benchmark (not a test): the packages of a Debian image, `diskcast inspect` against
# `umoci unpack` of the same image (issue 19's goal: inspect <= 0.25x unpack, since it reads
# only what it needs and extracts nothing). The image is a Debian bookworm root filesystem
# made by mmdebstrap (minbase plus ROOTFS_PACKAGES), put into one OCI layer by umoci.
# RUNS timed rounds after a warm-up round; a sync before each run; the tools alternate
# within a round (the order rotates), each round prints its load and its ratio.
# Env: RUNS (5), WORK (bench/work/inspect), DISKCAST (target/release/diskcast),
# ROOTFS_TAR (a mmdebstrap tar to reuse), ROOTFS_PACKAGES (linux-image-amd64,systemd-sysv),
# TARGET_DIR (where umoci unpacks; see lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}; WORK=${WORK:-bench/work/inspect}; DISKCAST=${DISKCAST:-target/release/diskcast}
# shellcheck source=bench/lib.sh
. bench/lib.sh
mkdir -p "$WORK"; IMG=$WORK/img
if [ ! -f "$IMG/index.json" ]; then
  tarball=${ROOTFS_TAR:-$WORK/rootfs.tar}
  [ -f "$tarball" ] || mmdebstrap --quiet --variant=minbase \
    --include="${ROOTFS_PACKAGES:-linux-image-amd64,systemd-sysv}" bookworm "$tarball"
  rm -rf "$WORK/rootfs"; mkdir -p "$WORK/rootfs"; tar -xf "$tarball" -C "$WORK/rootfs"
  umoci init --layout "$IMG" >/dev/null; umoci new --image "$IMG:t"
  umoci insert --image "$IMG:t" "$WORK/rootfs" / >/dev/null
  rm -rf "$WORK/rootfs"
fi
T=$(target_dir 2048 "$WORK"); mkdir -p "$T"
expected=$(umoci unpack --rootless --image "$IMG:t" "$T/check" >/dev/null 2>&1 &&
  dpkg-query --admindir="$T/check/rootfs/var/lib/dpkg" -W -f='${db:Status-Status} ${Package}\n' | grep -c '^installed ')
rm -rf "$T/check"
one() { # NAME: clean, sync, run timed; prints the seconds
  case $1 in
    "diskcast inspect") sync; t0=$(date +%s.%N)
      "$DISKCAST" inspect --output json "oci:$IMG:t" > "$WORK/inspect.json" 2>/dev/null || { echo "FAIL: diskcast" >&2; exit 1; } ;;
    *) rm -rf "$T/bundle"; sync; t0=$(date +%s.%N)
      umoci unpack --rootless --image "$IMG:t" "$T/bundle" >/dev/null 2>&1 || { echo "FAIL: umoci" >&2; exit 1; } ;;
  esac
  echo "$(date +%s.%N) - $t0" | bc
}
check() { # inspect lists as many deb packages as dpkg-query finds installed in the unpacked tree.
  got=$(/usr/bin/python3 -c 'import json,sys; print(sum(1 for p in json.load(open(sys.argv[1]))["packages"] if p["type"] == "deb"))' "$WORK/inspect.json")
  [ "$got" = "$expected" ] || { echo "FAIL: inspect lists $got deb packages, dpkg-query $expected" >&2; exit 1; }
}
alternate "diskcast inspect" "umoci unpack --rootless" "diskcast inspect" "umoci unpack --rootless"
echo "$expected deb packages, $RUNS rounds"
echo "diskcast inspect / umoci unpack = $(ratio "diskcast inspect" "umoci unpack --rootless") of medians; per round $(ratio_range) (goal <= 0.25)"
rm -rf "$T/bundle"
