#!/usr/bin/env bash
# Builds the offloadd Debian package (default features: ring, pcap and af_packet
# ports) with cargo-deb: release binaries, their man pages and shell completions
# (written by the binaries from their clap definitions), the systemd unit, the config
# and the maintainer scripts of packaging/debian. Prints the .deb's path last.
# Needs cargo-deb: cargo install cargo-deb --locked
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac

cargo build --release -p control --bin offloadd --bin offloadctl
docs=$target/release/cli-docs
rm -rf "$docs"
"$target/release/offloadd" --write-docs "$docs"
"$target/release/offloadctl" write-docs "$docs"
# Debian's man pages are gzipped (cargo-deb leaves built files as they are).
gzip -9n "$docs"/man/*.1
# --strip: the release profile keeps line tables (debug = 1) for backtraces in
# development; the package ships stripped binaries.
cargo deb -p control --no-build --strip --output "$target/debian/"
