#!/usr/bin/env bash
# diskcast extract against bsdtar (and GNU tar for a tar, umoci for an OCI image) writing
# onto a real disk: the same tree as an ISO, a tar and a one-layer OCI image, extracted
# into the work directory's filesystem (not a tmpfs), in two conditions:
#
#   fresh   every run writes into a new directory; nothing is deleted until the end
#   delete  each tool first deletes (rm -rf, then sync) its own previous output, so it
#           writes right after a large delete, as a user re-extracting does
#
# The tools alternate within each round (the order rotates every round), so load from
# other work on the machine hits every tool alike; a sync before each run; the median
# and spread of RUNS rounds per tool. A benchmark, not a test: CI does not run it.
#
#   bench/extract.sh                              # /usr/share, both conditions, every input
#   INPUTS=iso CONDITIONS=delete RUNS=5 bench/extract.sh
#
# Knobs (environment):
#   TREE=/usr/share      the source tree (xorriso, GNU tar and umoci make the inputs once)
#   INPUTS="iso tar oci" which inputs
#   CONDITIONS="fresh delete"
#   RUNS=3               rounds per input and condition (after one uncounted warm-up round)
#   SETTLE=400           seconds to wait after deleting a condition's outputs before the
#                        next one: ext4 without a journal avoids inodes deleted in the last
#                        60 s (360 s while their inode table block is dirty)
#   DISKCAST=            use this binary instead of building target/release/diskcast
#   BASE=                another diskcast binary (an older build) timed beside it as `base`
#   WORK=                work directory (default bench/work/extract, gitignored); its
#                        filesystem is the one measured: `fresh` needs room for
#                        (RUNS + 1) outputs of every tool
#
# Every output holds as many entries as the first one (checked on the warm-up's and the
# last round's; the inputs are made once, the tree may have changed since), and diskcast's first output of each input is compared with bsdtar's
# (`diff -r --no-dereference`).
set -euo pipefail
export LC_ALL=C
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WORK=${WORK:-$BENCH_ROOT/bench/work/extract}
TREE=${TREE:-/usr/share}
INPUTS=${INPUTS:-iso tar oci}
CONDITIONS=${CONDITIONS:-fresh delete}
mkdir -p "$WORK"

ISO=$WORK/tree.iso TAR=$WORK/tree.tar IMG=$WORK/img
[ -f "$ISO" ] || xorriso -as mkisofs -quiet -R -J -joliet-long -o "$ISO" "$TREE"
[ -f "$TAR" ] || tar --format=pax -cf "$TAR" -C "$(dirname "$TREE")" "$(basename "$TREE")"
if [ ! -f "$IMG/index.json" ]; then
    umoci init --layout "$IMG"
    umoci new --image "$IMG:t"
    umoci raw add-layer --image "$IMG:t" "$TAR"
fi
echo "tree: $TREE, $(du -sh "$TREE" | cut -f1), $(find "$TREE" -xdev | wc -l) entries; writing into $(df --output=source,fstype "$WORK" | tail -1)"

# run_tool INPUT TOOL OUT: extracts INPUT with TOOL into OUT (made
# empty first where the tool wants it to exist).
run_tool() {
    local input=$1 tool=$2 out=$3
    case "$input:$tool" in
        iso:base) "$BASE" extract "$ISO" "$out" ;;
        tar:base) "$BASE" extract "$TAR" "$out" ;;
        oci:base) "$BASE" extract "oci:$IMG:t" "$out" ;;
        iso:diskcast) "$DISKCAST" extract "$ISO" "$out" ;;
        tar:diskcast) "$DISKCAST" extract "$TAR" "$out" ;;
        oci:diskcast) "$DISKCAST" extract "oci:$IMG:t" "$out" ;;
        iso:bsdtar) mkdir -p "$out" && bsdtar -xf "$ISO" -C "$out" ;;
        # PAX names are UTF-8: bsdtar refuses them under LC_ALL=C.
        tar:bsdtar) mkdir -p "$out" && LC_ALL=C.UTF-8 bsdtar -xf "$TAR" -C "$out" ;;
        tar:gnutar) mkdir -p "$out" && tar -xf "$TAR" -C "$out" ;;
        oci:umoci) umoci unpack --rootless --image "$IMG:t" "$out" ;;
    esac
}

# The tree inside OUT (umoci puts it in rootfs/, tar keeps the top directory's name).
tree_of() {
    case "$1:$2" in
        iso:*) echo "$3" ;;
        oci:umoci) echo "$3/rootfs/$(basename "$TREE")" ;;
        *) echo "$3/$(basename "$TREE")" ;;
    esac
}

tools_for() {
    local t
    case "$1" in
        iso) t="diskcast bsdtar" ;;
        tar) t="diskcast bsdtar gnutar" ;;
        oci) t="diskcast umoci" ;;
    esac
    echo "$t${BASE:+ base}"
}

for input in $INPUTS; do
    for cond in $CONDITIONS; do
        read -ra tools <<<"$(tools_for "$input")"
        declare -A T=()
        want=
        echo "== $input, $cond"
        for r in $(seq 0 "$RUNS"); do
            n=${#tools[@]}
            for k in $(seq 0 $((n - 1))); do
                tool=${tools[$(((k + r) % n))]}
                if [ "$cond" = fresh ]; then
                    out=$WORK/out/$input-$tool-$r
                else
                    out=$WORK/out/$input-$tool
                    rm -rf "$out"
                fi
                sync
                t0=$(date +%s.%N)
                run_tool "$input" "$tool" "$out" >/dev/null 2>"$WORK/stderr" ||
                    { echo "FAIL: $input $tool exited with an error: $(tail -5 "$WORK/stderr")" >&2; exit 1; }
                t1=$(date +%s.%N)
                if [ "$r" = 0 ] || [ "$r" = "$RUNS" ]; then
                    got=$(find "$(tree_of "$input" "$tool" "$out")" -xdev | wc -l)
                    want=${want:-$got}
                    [ "$got" = "$want" ] || { echo "FAIL: $input $tool: $got entries, $want in another tool's output" >&2; exit 1; }
                fi
                printf '  round %s %-8s %6.2f s\n' "$r" "$tool" "$(echo "$t1 - $t0" | bc)" >&2
                [ "$r" = 0 ] || T[$tool]+="$(echo "$t1 - $t0" | bc) "
            done
            if [ "$r" = 0 ] && [ "$cond" = "${CONDITIONS%% *}" ]; then
                diff -r --no-dereference "$(tree_of "$input" diskcast "$WORK/out/$input-diskcast"*)" \
                    "$(tree_of "$input" "${tools[1]}" "$WORK/out/$input-${tools[1]}"*)" >/dev/null ||
                    { echo "FAIL: $input: diskcast's output differs from ${tools[1]}'s" >&2; exit 1; }
            fi
        done
        for tool in "${tools[@]}"; do
            # shellcheck disable=SC2086
            summarize "$input $cond $tool" ${T[$tool]}
        done
        for tool in "${tools[@]:1}"; do
            printf '%s %s: diskcast / %s = %s (goal <= 0.5)\n' "$input" "$cond" "$tool" \
                "$(ratio "$input $cond diskcast" "$input $cond $tool")"
        done
        echo "load average after $input $cond: $(cut -d' ' -f1-3 /proc/loadavg)"
        rm -rf "$WORK/out"
        unset T
        # What was just deleted slows every creation near it for minutes (see
        # docs/performance.md): let it age before the next condition starts.
        sync
        [ "$cond $input" = "${CONDITIONS##* } ${INPUTS##* }" ] || sleep "${SETTLE:-400}"
    done
done
echo "nproc $(nproc), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), diskcast $(cd "$BENCH_ROOT" && git rev-parse --short HEAD)"
