# Shared by the tree benchmarks (ext4.sh, iso.sh, oci.sh): timed runs with a sync before
# each, medians and spread. Source it; needs bc.
#
#   measure NAME "CLEAN" "CHECK" CMD...
#       runs CLEAN (shell text), sync, then CMD timed; one uncounted warm-up, then RUNS
#       timed runs. CHECK (shell text) must succeed on the warm-up's output and on the
#       last run's, or the benchmark fails (checking every run would double a big
#       benchmark's time for the same binary on the same input). Prints "NAME: median MED s (min MIN, max MAX, N runs)" to stderr and
#       records the median in MEDIAN[NAME] and the spread in SPREAD[NAME].
#   ratio A B   prints MEDIAN[A] / MEDIAN[B] with two decimals.
declare -A MEDIAN SPREAD
RUNS=${RUNS:-3}

measure() {
    local name=$1 clean=$2 check=$3
    shift 3
    local times=() r t0 t1
    for r in $(seq 0 "$RUNS"); do
        eval "$clean"
        sync
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || { echo "FAIL: $name: $* exited with an error" >&2; exit 1; }
        t1=$(date +%s.%N)
        if [ "$r" = 0 ] || [ "$r" = "$RUNS" ]; then
            eval "$check" || { echo "FAIL: $name produced a wrong result" >&2; exit 1; }
        fi
        [ "$r" = 0 ] && continue
        times+=("$(echo "$t1 - $t0" | bc)")
    done
    summarize "$name" "${times[@]}"
}

# summarize NAME SECONDS...: records the median in MEDIAN[NAME] and min-max in
# SPREAD[NAME], and prints them to stderr.
summarize() {
    local name=$1 sorted n med
    shift
    sorted=$(printf '%s\n' "$@" | sort -g)
    n=$#
    med=$(echo "$sorted" | awk -v n="$n" '{a[NR]=$1} END {if (n % 2) print a[(n+1)/2]; else print (a[n/2]+a[n/2+1])/2}')
    MEDIAN[$name]=$med
    SPREAD[$name]="$(echo "$sorted" | head -1)-$(echo "$sorted" | tail -1)"
    printf '%-36s median %7.2f s  (min %s, max %s, %d runs)\n' "$name" "$med" \
        "$(echo "$sorted" | head -1)" "$(echo "$sorted" | tail -1)" "$n" >&2
}

ratio() {
    printf '%.2f' "$(echo "${MEDIAN[$1]} / ${MEDIAN[$2]}" | bc -l)"
}

# alternate NUM DEN NAME...: one warm-up round 0, then RUNS rounds; in each, every tool
# NAME runs once through the caller's `one NAME` (which cleans, syncs, runs and prints its
# seconds), in an order that rotates each round, so load from other work hits them alike.
# Prints each round with its load average and its NUM/DEN ratio; calls the caller's
# `check` after round 0 and after the last round; then each tool's median and spread
# (summarize). RATIOS holds the counted rounds' ratios; ratio_range prints MIN-MAX.
alternate() {
    local num=$1 den=$2 r k name t rr line
    shift 2
    local names=("$@") n=$#
    declare -A times=() now=()
    RATIOS=()
    for r in $(seq 0 "$RUNS"); do
        line="round $r (load $(cut -d' ' -f1 /proc/loadavg)):"
        for k in $(seq 0 $((n - 1))); do
            name=${names[$(((k + r) % n))]}; t=$(one "$name"); now[$name]=$t; line+=" $name $t s;"
        done
        rr=$(printf '%.3f' "$(echo "${now[$num]} / ${now[$den]}" | bc -l)")
        echo "$line ratio $rr" >&2
        if [ "$r" = 0 ] || [ "$r" = "$RUNS" ]; then check; fi
        [ "$r" = 0 ] && continue
        RATIOS+=("$rr")
        for name in "${names[@]}"; do times[$name]+="${now[$name]} "; done
    done
    for name in "${names[@]}"; do
        # shellcheck disable=SC2086
        summarize "$name" ${times[$name]}
    done
}

ratio_range() {
    local sorted
    sorted=$(printf '%s\n' "${RATIOS[@]}" | sort -g)
    echo "$(echo "$sorted" | head -1)-$(echo "$sorted" | tail -1)"
}

# Where extraction benchmarks write their trees: $TARGET_DIR if set, else a tmpfs
# (/dev/shm) when it has room for NEED_MB, else the work directory. Why not the work
# directory's filesystem by default: every timed run deletes the previous run's tens of
# thousands of files first, and an ext4 without a journal (the development machine's
# root filesystem) then skips recently deleted inodes one by one for minutes (perf showed
# 75% of both diskcast's and xorriso's time in the kernel's recently_deleted and
# find_inode_bit), which measures the host filesystem, not the extractor.
# TARGET_DIR=$WORK measures that case anyway.
target_dir() { # NEED_MB FALLBACK
    local need=$1 fallback=$2
    if [ -n "${TARGET_DIR:-}" ]; then
        echo "$TARGET_DIR"
    elif [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] &&
        [ "$(($(stat -f -c '%a * %S' /dev/shm)))" -gt $((need * 3 / 2 << 20)) ]; then
        echo /dev/shm/diskcast-bench
    else
        echo "$fallback"
    fi
}

# The diskcast under test: $DISKCAST if set, else target/release/diskcast built now (so a
# stale binary is never measured).
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${DISKCAST:-}" ]; then
    (cd "$BENCH_ROOT" && cargo build --release -q -p diskcast)
    DISKCAST=$BENCH_ROOT/target/release/diskcast
fi

# half_compressible DIR MB SEED: MB MiB of half-compressible files (base64 of random
# bytes), 4 KiB to 4 MiB each, spread over 64 directories of DIR; the same SEED gives
# the same files.
half_compressible() {
    /usr/bin/python3 - "$1" "$2" "$3" <<'PY'
import base64, os, random, sys
d, mb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed); left = mb << 20; i = 0
while left > 0:
    n = min(left, rnd.choice([4096, 65536, 1 << 20, 4 << 20]))
    sub = os.path.join(d, f"dir{i % 64}"); os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i}"), "wb") as f:
        f.write(base64.b64encode(rnd.randbytes(n * 3 // 4 + 3))[:n])
    left -= n; i += 1
PY
}
