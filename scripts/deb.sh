#!/usr/bin/env bash
# Builds target/debian/diskcast_VERSION-1_ARCH.deb with cargo-deb: the binary, its man
# pages (diskcast man) and bash, zsh and fish completions (diskcast completions), and the
# README. Needs cargo-deb (`cargo install cargo-deb --locked`: about 110 s of CPU) and
# dpkg-dev. PROFILE=dev packages the debug build (quick, for checking the package).
# tests/integration/packaging.rs runs it (release) and installs the package in a throwaway root.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
case "$profile" in dev) dir=debug ;; *) dir=$profile ;; esac
cargo build --locked --profile "$profile" -p diskcast
out=target/$dir
assets=$out/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man"
"$out/diskcast" man "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1   # Debian policy: man pages compressed, no name or time stored
"$out/diskcast" completions bash >"$assets/diskcast.bash"
"$out/diskcast" completions zsh >"$assets/_diskcast"
"$out/diskcast" completions fish >"$assets/diskcast.fish"
# Stripped, as Debian ships binaries (lintian: unstripped-binary-or-object): the release
# profile keeps line tables for backtraces, which cargo-deb would otherwise leave in.
cargo deb --locked -p diskcast --no-build --profile "$profile" --strip "$@"
