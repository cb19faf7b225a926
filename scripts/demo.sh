#!/usr/bin/env bash
# The main job on a generated example: qemu-img makes a small qcow2 with data, zeros and
# holes; diskcast converts it to raw and to a zstd-compressed qcow2; qemu-img judges both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -q -p diskcast
# Wherever cargo puts it: CARGO_TARGET_DIR, build.target-dir in a config, or ./target.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
dc="$target_dir/release/diskcast"
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
qemu-img create -q -f qcow2 "$w/disk.qcow2" 256M
qemu-io -f qcow2 -c 'write -P 0xab 1M 3M' -c 'write -z 8M 2M' -c 'write -P 0x5c 100M 512k' "$w/disk.qcow2" >/dev/null
set -x
"$dc" info "$w/disk.qcow2"
"$dc" convert -p -O raw "$w/disk.qcow2" "$w/disk.raw"
"$dc" convert -p -c -O qcow2 -o compression_type=zstd "$w/disk.raw" "$w/small.qcow2"
"$dc" compare "$w/disk.qcow2" "$w/small.qcow2"
qemu-img compare "$w/disk.qcow2" "$w/small.qcow2"
qemu-img check "$w/small.qcow2"
"$dc" info --output json "$w/small.qcow2"
