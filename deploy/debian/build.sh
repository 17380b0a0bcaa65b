#!/usr/bin/env bash
# Builds the Debian package: target/debian/heartbeat_<version>-1_<arch>.deb.
#
# The release binaries first, then their man pages and bash/zsh/fish completions, printed by
# each binary's hidden `--generate` flag from its own clap definition (so they cannot drift
# from `--help`), into target/release/generated/; then `cargo deb --no-build` packs both with
# the units and scripts named in heartbeat-net/Cargo.toml ([package.metadata.deb]).
# Needs cargo-deb (`cargo install cargo-deb --locked`) and gzip. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked -p heartbeat-net --bins
target=${CARGO_TARGET_DIR:-$PWD/target}
gen=$target/release/generated
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/bash" "$gen/zsh" "$gen/fish"
for bin in heartbeat-server heartbeat-client heartbeat-load; do
    exe=$target/release/$bin
    "$exe" --generate man | gzip -9n >"$gen/man/$bin.1.gz"
    "$exe" --generate bash >"$gen/bash/$bin"
    "$exe" --generate zsh >"$gen/zsh/_$bin"
    "$exe" --generate fish >"$gen/fish/$bin.fish"
done
mkdir -p "$target/debian"
cargo deb -p heartbeat-net --no-build --output "$target/debian/"
