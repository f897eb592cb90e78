#!/usr/bin/env bash
# Checks that the minimum supported Rust version is true:
#   1. every workspace crate inherits `rust-version` from the workspace;
#   2. the toolchain that builds and tests the project (rust-toolchain.toml,
#      and the container image's Rust) is exactly that version, so CI proves
#      it builds with it;
#   3. no dependency in Cargo.lock declares a newer `rust-version`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$GIFTCARD_REPO"

msrv="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)"
[[ -n "$msrv" ]] || die "Cargo.toml's [workspace.package] has no rust-version: add one"
toolchain="$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)"
[[ "$toolchain" == "$msrv" || "$toolchain" == "$msrv".* ]] ||
  die "rust-toolchain.toml pins $toolchain but the MSRV is $msrv: make them agree (CI must build with the MSRV)"
docker_rust="$(sed -n 's/^ARG RUST_VERSION=//p' deploy/docker/Dockerfile)"
[[ "$docker_rust" == "$toolchain" ]] ||
  die "deploy/docker/Dockerfile builds with rust $docker_rust, not $toolchain (rust-toolchain.toml): set ARG RUST_VERSION=$toolchain"
rustc_version="$(rustc --version | cut -d' ' -f2)"
[[ "$rustc_version" == "$msrv" || "$rustc_version" == "$msrv".* ]] ||
  die "rustc is $rustc_version, not the MSRV $msrv: run 'rustup toolchain install $toolchain' (rust-toolchain.toml selects it)"

cargo metadata --format-version 1 --locked | python3 "$GIFTCARD_REPO/scripts/msrv_check.py" "$msrv" || die "the MSRV $msrv is not true (above): raise rust-version (and rust-toolchain.toml) or change the dependency"
