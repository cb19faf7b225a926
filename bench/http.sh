#!/bin/bash
# Images over HTTP benchmark (not a test): a SIZE_MB MiB qcow2 (1024 by default) that
# qemu-img made, every other MiB holding data (half data), converted to raw two ways, RUNS
# timed rounds (after one warm-up round; a sync before each run; the order alternates):
#   diskcast convert -O raw http://127.0.0.1:PORT/disk.qcow2 OUT   (nginx on loopback)
#   diskcast convert -O raw WORK/disk.qcow2 OUT                    (the local file)
# Prints each round, the medians and the ratio (goal: at most 1.5). Run it on a quiet machine.
# Env: SIZE_MB (1024), RUNS (3), WORK (bench/work/http), DISKCAST (target/release/diskcast),
# TARGET_DIR (where the outputs go; default /dev/shm when it has room, see lib.sh).
# Needs nginx (nginx-light), qemu-img, qemu-io, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}; WORK=${WORK:-bench/work/http}
# shellcheck source=bench/lib.sh
. bench/lib.sh
WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
IMG=$WORK/www/disk.qcow2
if [ ! -f "$IMG" ] || [ "$(cat "$WORK/size" 2>/dev/null)" != "$SIZE_MB" ]; then
  mkdir -p "$WORK/www"; rm -f "$IMG"
  qemu-img create -q -f qcow2 "$IMG" "${SIZE_MB}M"
  # Every other MiB written with its own pattern: half the disk is data.
  cmds=()
  for m in $(seq 0 2 $((SIZE_MB - 1))); do cmds+=(-c "write -q -P $((m % 251 + 1)) ${m}M 1M"); done
  qemu-io "${cmds[@]}" "$IMG" >/dev/null
  echo "$SIZE_MB" > "$WORK/size"
fi
T=$(target_dir $((SIZE_MB * 2)) "$WORK"); mkdir -p "$T"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx-tmp"
cat > "$WORK/nginx.conf" <<CONF
daemon off; user root; worker_processes 2; pid $WORK/nginx.pid; error_log $WORK/nginx-error.log;
events {}
http { access_log off; client_body_temp_path $WORK/nginx-tmp; proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp; uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  server { listen 127.0.0.1:$PORT; root $WORK/www; } }
CONF
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" & NGINX_PID=$!
trap 'kill -TERM $NGINX_PID 2>/dev/null; wait $NGINX_PID 2>/dev/null; rm -f "$T/http.raw" "$T/local.raw"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
URL=http://127.0.0.1:$PORT/disk.qcow2
one() { # NAME: clean, sync, run timed; prints the seconds
  case $1 in
    http) rm -f "$T/http.raw"; sync; t0=$(date +%s.%N)
      "$DISKCAST" convert -O raw "$URL" "$T/http.raw" >/dev/null 2>&1 || { echo "FAIL: diskcast over http" >&2; exit 1; } ;;
    local) rm -f "$T/local.raw"; sync; t0=$(date +%s.%N)
      "$DISKCAST" convert -O raw "$IMG" "$T/local.raw" >/dev/null 2>&1 || { echo "FAIL: diskcast local" >&2; exit 1; } ;;
  esac
  echo "$(date +%s.%N) - $t0" | bc
}
check() { # Both outputs hold the image's guest bytes, as qemu-img sees them.
  qemu-img compare -q -f raw -F qcow2 "$T/http.raw" "$IMG" && qemu-img compare -q -f raw -F qcow2 "$T/local.raw" "$IMG" ||
    { echo "FAIL: an output differs from the image" >&2; exit 1; }
}
alternate http local http local
printf 'size %s MiB (half data), %s rounds, nginx on loopback\n' "$SIZE_MB" "$RUNS"
echo "over http / local file = $(ratio http local) of medians; per round $(ratio_range) (goal <= 1.5)"
