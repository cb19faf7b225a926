#!/usr/bin/env bash
# diskcast vs `qemu-img convert`: wall time, peak RSS and output size per conversion pair.
# A benchmark, not a test: CI does not run it. See bench/README.md.
#
#   bench/run.sh                         # full run: 4 GiB disk, 3 runs per tool and pair
#   SIZE=256M RUNS=1 bench/run.sh        # quick self-check
#   PAIRS='raw->raw raw->qcow2' bench/run.sh
#
# Knobs (environment):
#   SIZE=4G        test disk size (K/M/G suffixes, powers of 1024)
#   SEED=20240601  test disk seed (same SIZE+SEED = byte-identical disk, reused if present)
#   RUNS=3         timed runs per tool and pair (after one uncounted warm-up run each)
#   PAIRS=         space/comma separated pair names or globs (default: all in PAIR_TABLE)
#   THREADS=       if set, passed to diskcast as `-j N` (qemu-img keeps its defaults)
#   KEEP=1         keep the last output of each tool (bench/work/out/) instead of deleting it
#   QEMU_CACHE=writeback  passed to qemu-img convert as `-t MODE`. writeback makes qemu-img
#                  fdatasync its output like diskcast always does (qemu-img's own default,
#                  unsafe, never syncs); QEMU_CACHE=unsafe measures that default instead
#   DISKCAST=      use this diskcast binary instead of building target/release/diskcast
#   WORK=          work directory (default bench/work, gitignored)
set -euo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
WORK=${WORK:-$BENCH_DIR/work}
SIZE=${SIZE:-4G}
SEED=${SEED:-20240601}
RUNS=${RUNS:-3}
PAIRS=${PAIRS:-}
THREADS=${THREADS:-}
KEEP=${KEEP:-0}
QEMU_CACHE=${QEMU_CACHE-writeback}
DISKCAST=${DISKCAST:-}

# One line per conversion pair. Adding a format is one line here; a source image in any
# format other than raw is made once from the raw disk with `qemu-img convert -O FMT`.
# Format names are qemu's (diskcast takes `vpc` as another name for `vhd`). Goals:
# plain = time <= 0.75x qemu-img; comp = time <= 0.5x and size <= 1.05x;
# stream = time <= 0.33x and size <= 1.05x (streamOptimized VMDK).
#   name              src    dst    goal   extra options (given to both tools)
PAIR_TABLE='
raw->raw            raw    raw    plain
raw->qcow2          raw    qcow2  plain
qcow2->raw          qcow2  raw    plain
raw->qcow2+zstd     raw    qcow2  comp   -c -o compression_type=zstd
raw->qcow2+zlib     raw    qcow2  comp   -c -o compression_type=zlib
raw->vmdk           raw    vmdk   plain
raw->vmdk+stream    raw    vmdk   stream -o subformat=streamOptimized
raw->vhd            raw    vpc    plain
raw->vhdx           raw    vhdx   plain
raw->vdi            raw    vdi    plain
qcow2->vmdk         qcow2  vmdk   plain
qcow2->vmdk+stream  qcow2  vmdk   stream -o subformat=streamOptimized
qcow2->vhd          qcow2  vpc    plain
qcow2->vhdx         qcow2  vhdx   plain
qcow2->vdi          qcow2  vdi    plain
'
# Formats whose images `qemu-img check` can check (others are only compared).
CHECKABLE=" qcow2 vmdk vhdx vdi qed parallels "

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ -z $THREADS || $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
command -v qemu-img >/dev/null || die "qemu-img not found (apt install qemu-utils)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) not found (apt install time)"
command -v python3 >/dev/null || die "python3 not found"
SIZE_BYTES=$(numfmt --from=iec "$SIZE") || die "bad SIZE: $SIZE"

# --- pairs to run -------------------------------------------------------------------------
selected=()
while read -r name rest; do
    [[ -z $name || $name == \#* ]] && continue
    if [[ -z $PAIRS ]]; then
        selected+=("$name $rest")
        continue
    fi
    for pat in ${PAIRS//,/ }; do
        # shellcheck disable=SC2053  # glob match on purpose
        if [[ $name == $pat ]]; then selected+=("$name $rest"); break; fi
    done
done <<<"$PAIR_TABLE"
((${#selected[@]})) || die "PAIRS='$PAIRS' matches none of: $(awk 'NF{printf "%s ", $1}' <<<"$PAIR_TABLE")"

mkdir -p "$WORK/out" "$WORK/logs"

# --- diskcast binary ----------------------------------------------------------------------
if [[ -z $DISKCAST ]]; then
    log "building diskcast (cargo build --release -p diskcast)"
    (cd "$ROOT" && cargo build --release -p diskcast) ||
        die "build failed; fix it or point DISKCAST= at a binary"
    DISKCAST=$ROOT/target/release/diskcast
fi
[[ -x $DISKCAST ]] || die "not executable: $DISKCAST"
if [[ $DISKCAST == "$ROOT/target/release/diskcast" ]]; then
    DC_REV=$(cd "$ROOT" && GIT_OPTIONAL_LOCKS=0 git rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! (cd "$ROOT" && GIT_OPTIONAL_LOCKS=0 git diff-index --quiet HEAD -- 2>/dev/null); then
        DC_REV+=" + uncommitted changes"
    fi
else
    DC_REV="binary $DISKCAST"
fi

# --- test disk (reused when size, seed and generator version match) -----------------------
DISK=$WORK/disk-$SIZE_BYTES-s$SEED.raw
META=$DISK.json
GEN_VERSION=$(sed -n 's/^GENERATOR_VERSION = \([0-9]*\).*/\1/p' "$BENCH_DIR/mkdisk.py")
meta_ok() {
    [[ -f $DISK && -f $META ]] && python3 - "$META" "$SIZE_BYTES" "$SEED" "$GEN_VERSION" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
ok = (m["size"], m["seed"], m["generator_version"]) == tuple(map(int, sys.argv[2:5]))
sys.exit(0 if ok else 1)
PY
}
if meta_ok; then
    log "reusing $DISK"
else
    log "creating test disk $DISK"
    rm -f "$DISK" "$META" "${DISK%.raw}".*.src
    python3 "$BENCH_DIR/mkdisk.py" "$DISK" --size "$SIZE_BYTES" --seed "$SEED" --meta "$META.tmp" >&2
    mv "$META.tmp" "$META"
fi
MIX=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mix"])' "$META")

# Source image in FMT (made once by qemu-img from the raw disk).
source_image() {
    local fmt=$1 img
    if [[ $fmt == raw ]]; then echo "$DISK"; return; fi
    img=${DISK%.raw}.$fmt.src
    if [[ ! -f $img || $img -ot $DISK ]]; then
        log "creating $fmt source with qemu-img convert -O $fmt"
        qemu-img convert -f raw -O "$fmt" "$DISK" "$img.tmp" >&2
        mv "$img.tmp" "$img"
    fi
    echo "$img"
}

# --- measurement --------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
: >"$RESULTS"
record() { local IFS=$'\t'; echo "$*" >>"$RESULTS"; }

# run_tool TOOL PAIR SRC_FMT DST_FMT SRC DST LOG OPTS... ; sets WALL RSS, returns exit status
run_tool() {
    local tool=$1 pair=$2 sf=$3 df=$4 src=$5 dst=$6 logf=$7
    shift 7
    local cmd tf=$WORK/time.out rc=0
    if [[ $tool == diskcast ]]; then
        cmd=("$DISKCAST" convert -f "$sf" -O "$df" "$@" ${THREADS:+-j "$THREADS"} "$src" "$dst")
    else
        cmd=(qemu-img convert -f "$sf" -O "$df" "$@" ${QEMU_CACHE:+-t "$QEMU_CACHE"} "$src" "$dst")
    fi
    echo "+ ${cmd[*]}" >"$logf"
    local t0=$EPOCHREALTIME
    /usr/bin/time -f '%e %M' -o "$tf" "${cmd[@]}" >>"$logf" 2>&1 || rc=$?
    local t1=$EPOCHREALTIME
    # GNU time puts "Command exited with non-zero status N" before the format line.
    local e
    read -r e RSS < <(tail -n 1 "$tf")
    # %e has 10 ms resolution; keep it unless it is short enough for that to matter, then
    # use the shell's microsecond clock around the same command (includes exec of time).
    WALL=$(awk -v e="$e" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (e >= 10 ? e : b - a) }')
    return $rc
}

# verify SRC_FMT DST_FMT SRC DST LOG ; prints a failure reason, returns 1 on failure
verify() {
    local sf=$1 df=$2 src=$3 dst=$4 logf=$5 rc=0
    qemu-img compare -f "$sf" -F "$df" "$src" "$dst" >>"$logf" 2>&1 || rc=$?
    if ((rc != 0)); then echo "compare exit $rc"; return 1; fi
    if [[ $CHECKABLE == *" $df "* ]]; then
        qemu-img check -f "$df" "$dst" >>"$logf" 2>&1 || rc=$?
        if ((rc != 0)); then echo "check exit $rc"; return 1; fi
    fi
    return 0
}

alloc_bytes() { stat -c '%b %B' "$1" | awk '{print $1 * $2}'; }

cleanup() { [[ $KEEP == 1 ]] || rm -f "$WORK"/out/*; }
trap cleanup EXIT

for line in "${selected[@]}"; do
    read -r pair sf df goal opts <<<"$line"
    # shellcheck disable=SC2206  # word splitting of the option list is intended
    opts=($opts)
    slug=$(tr -c 'A-Za-z0-9.\n' '_' <<<"$pair")
    log "$pair"
    record "$pair" - goal "$goal"
    record "$pair" - cmd "diskcast convert -f $sf -O $df ${opts[*]:+${opts[*]} }${THREADS:+-j $THREADS }SRC DST"
    if ! src=$(source_image "$sf"); then
        record "$pair" diskcast status "FAILED: cannot make $sf source"
        record "$pair" qemu status "FAILED: cannot make $sf source"
        continue
    fi
    declare -A ok=([diskcast]=1 [qemu]=1)

    # Warm-up (uncounted, one per tool), then verify that output.
    for tool in diskcast qemu; do
        dst=$WORK/out/$slug.$tool.$df
        logf=$WORK/logs/$slug.$tool.warmup.log
        rm -f "$dst"
        sync
        if run_tool "$tool" "$pair" "$sf" "$df" "$src" "$dst" "$logf" "${opts[@]}"; then
            record "$pair" "$tool" warmup "$WALL" "$RSS"
            if reason=$(verify "$sf" "$df" "$src" "$dst" "$logf"); then
                record "$pair" "$tool" size "$(alloc_bytes "$dst")"
            else
                record "$pair" "$tool" size "$(alloc_bytes "$dst")"
                record "$pair" "$tool" status "FAILED: $reason (see $logf)"
                log "  $tool: verification FAILED: $reason"
            fi
        else
            rc=$?
            ok[$tool]=0
            msg=$(grep -v '^+ ' "$logf" | tail -n 1 | tr '\t' ' ' | cut -c1-160)
            record "$pair" "$tool" status "FAILED: exit $rc: $msg"
            log "  $tool: FAILED (exit $rc): $msg"
        fi
        [[ $KEEP == 1 ]] || rm -f "$dst"
    done

    # Timed runs, alternating which tool goes first.
    for ((i = 1; i <= RUNS; i++)); do
        if ((i % 2)); then order=(diskcast qemu); else order=(qemu diskcast); fi
        for tool in "${order[@]}"; do
            ((ok[$tool])) || continue
            dst=$WORK/out/$slug.$tool.$df
            logf=$WORK/logs/$slug.$tool.run$i.log
            rm -f "$dst"
            sync
            if run_tool "$tool" "$pair" "$sf" "$df" "$src" "$dst" "$logf" "${opts[@]}"; then
                record "$pair" "$tool" run "$WALL" "$RSS"
                log "  run $i $tool: ${WALL}s ${RSS}KiB"
            else
                rc=$?
                ok[$tool]=0
                record "$pair" "$tool" status "FAILED: exit $rc in run $i (see $logf)"
                log "  run $i $tool: FAILED (exit $rc)"
            fi
            [[ $KEEP == 1 && $i == "$RUNS" ]] || rm -f "$dst"
        done
    done
    unset ok
done

# --- report -------------------------------------------------------------------------------
export DATE_NOW NPROC QEMU_VERSION DISK_DESC MIX RUNS THREADS QEMU_CACHE DC_REV
DATE_NOW=$(date -u '+%Y-%m-%d %H:%M UTC')
NPROC=$(nproc)
QEMU_VERSION=$(qemu-img --version | head -n 1)
DISK_DESC="$SIZE ($SIZE_BYTES bytes), seed $SEED, generator v$GEN_VERSION"
python3 - "$RESULTS" "$WORK/results.md" <<'PY'
import os, statistics, sys
from collections import defaultdict

rows = defaultdict(lambda: {"diskcast": defaultdict(list), "qemu": defaultdict(list), "-": defaultdict(list)})
order = []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    pair, tool, kind, vals = f[0], f[1], f[2], f[3:]
    if pair not in order:
        order.append(pair)
    rows[pair][tool][kind].append(vals)

GOALS = {"plain": (0.75, None), "comp": (0.5, 1.05), "stream": (0.33, 1.05)}
RSS_GOAL = 256.0

def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)

table = []
for pair in order:
    r = rows[pair]
    goal = r["-"]["goal"][0][0]
    t_goal, s_goal = GOALS[goal]
    cell = {}
    for tool in ("diskcast", "qemu"):
        d = r[tool]
        runs = [(float(w), int(m)) for w, m in d["run"]]
        walls = [w for w, _ in runs]
        rss_all = [int(m) for _, m in d["warmup"]] + [m for _, m in runs]
        cell[tool] = {
            "med": statistics.median(walls) if walls else None,
            "min": min(walls) if walls else None,
            "max": max(walls) if walls else None,
            "rss": max(rss_all) / 1024 if rss_all else None,
            "size": int(d["size"][-1][0]) if d["size"] else None,
            "status": "; ".join(v[0] for v in d["status"]),
        }
    dc, q = cell["diskcast"], cell["qemu"]
    ratio = dc["med"] / q["med"] if dc["med"] and q["med"] else None
    sratio = dc["size"] / q["size"] if dc["size"] and q["size"] else None
    goal_txt = f"time ≤ {t_goal}" + (f", size ≤ {s_goal}×" if s_goal else "") + f", RSS < {RSS_GOAL:.0f} MiB"
    if dc["status"]:
        verdict = "FAILED"
    elif q["status"] or ratio is None:
        verdict = "n/a (qemu-img failed)"
    else:
        miss = []
        if ratio > t_goal:
            miss.append("time")
        if s_goal and (sratio is None or sratio > s_goal):
            miss.append("size")
        if dc["rss"] is None or dc["rss"] >= RSS_GOAL:
            miss.append("RSS")
        verdict = "PASS" if not miss else "MISS (" + ", ".join(miss) + ")"
    rng = lambda c: "—" if c["min"] is None else f"{c['min']:.2f}–{c['max']:.2f}"
    mib = lambda b: "—" if b is None else f"{b / 2**20:.1f}"
    table.append({
        "pair": pair,
        "dc s": fmt(dc["med"]), "qemu s": fmt(q["med"]), "ratio": fmt(ratio),
        "dc min–max": rng(dc), "qemu min–max": rng(q),
        "dc RSS MiB": fmt(dc["rss"], ".1f"), "qemu RSS MiB": fmt(q["rss"], ".1f"),
        "dc out MiB": mib(dc["size"]), "qemu out MiB": mib(q["size"]), "size ratio": fmt(sratio),
        "goal": goal_txt, "result": verdict,
        "_notes": [f"{t}: {c['status']}" for t, c in (("diskcast", dc), ("qemu-img", q)) if c["status"]],
        "_cmd": r["-"]["cmd"][0][0],
    })

cols = [c for c in table[0] if not c.startswith("_")] if table else []
e = os.environ
header = [
    "# diskcast vs qemu-img convert",
    "",
    f"- date: {e['DATE_NOW']}",
    f"- nproc: {e['NPROC']}",
    f"- qemu-img: {e['QEMU_VERSION']}" + (f" (-t {e['QEMU_CACHE']})" if e.get("QEMU_CACHE") else " (defaults)"),
    f"- diskcast: {e['DC_REV']}" + (f" (-j {e['THREADS']})" if e.get("THREADS") else " (default threads)"),
    f"- disk: {e['DISK_DESC']}; mix: {e['MIX']}",
    f"- RUNS: {e['RUNS']} timed runs per tool after one uncounted warm-up; times are medians, wall clock",
    "- ratio = diskcast / qemu-img median time; size ratio = diskcast / qemu-img allocated output size",
    "",
]
md = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
md += ["| " + " | ".join(row[c] for c in cols) + " |" for row in table]
notes = [f"- {row['pair']}: `{row['_cmd']}`" for row in table]
notes += [f"- {row['pair']}: {n}" for row in table for n in row["_notes"]]
with open(sys.argv[2], "w") as f:
    f.write("\n".join(header + md + ["", "Commands and failures:", ""] + notes) + "\n")

# Plain-text table for the terminal.
w = {c: max(len(c), *(len(row[c]) for row in table)) for c in cols}
print()
print("\n".join(header[2:-1]))
print()
print("  ".join(c.ljust(w[c]) for c in cols))
print("  ".join("-" * w[c] for c in cols))
for row in table:
    print("  ".join(row[c].ljust(w[c]) for c in cols))
for row in table:
    for n in row["_notes"]:
        print(f"{row['pair']}: {n}")
print(f"\nmarkdown: {sys.argv[2]}")
PY
