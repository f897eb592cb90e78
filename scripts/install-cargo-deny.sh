#!/usr/bin/env bash
# Makes <repo>/.tools/bin/cargo-deny exist at the pinned version and prints
# its path on stdout; progress goes to stderr. Idempotent. It is built from
# crates.io (`cargo install --locked`, a few minutes the first time): the
# prebuilt releases live on github.com, which these machines cannot reach.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PINNED=0.20.2
TOOLS="$GIFTCARD_REPO/.tools"
TARGET="$TOOLS/bin/cargo-deny"

if [[ -x "$TARGET" && "$("$TARGET" --version 2>/dev/null)" == "cargo-deny $PINNED" ]]; then
  printf '%s\n' "$TARGET"
  exit 0
fi
require_cmd cargo "install the Rust toolchain (https://rustup.rs), then re-run"
info "building cargo-deny $PINNED into $TOOLS/bin (cargo install --locked; a few minutes, once)"
# cargo-deny's own release profile asks for fat LTO in one codegen unit: five
# minutes of a 2-core CI machine for a tool that runs for two seconds here.
# These overrides build it in under three and a half.
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
  cargo install cargo-deny --version "$PINNED" --locked --root "$TOOLS" --quiet >&2 ||
  die "cargo install cargo-deny $PINNED failed (above): check that crates.io is reachable, then re-run"
printf '%s\n' "$TARGET"
