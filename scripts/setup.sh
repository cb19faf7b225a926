#!/usr/bin/env bash
# Installs what diskcast's tests and demo need on Debian/Ubuntu: the oracle tools that judge
# our output. Idempotent; needs root (uses sudo when not root).
#   qemu-utils: qemu-img (create, convert, compare, check, map, measure) and qemu-io
#   procps:     kill, which the Ctrl-C tests use to send SIGINT
#   coreutils:  timeout, which bounds every qemu call in the tests
set -euo pipefail
packages=(qemu-utils procps coreutils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in qemu-img qemu-io kill timeout; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is still missing after install" >&2; exit 1; }
done
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
echo "setup: $(qemu-img --version | head -1); $(cargo --version)"
