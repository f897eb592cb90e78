#!/usr/bin/env bash
# Makes <repo>/.tools/schemathesis/bin/st exist at the pinned version (a
# Python venv installed with `pip install --require-hashes` from
# tests/schemathesis.requirements.txt) and prints its path on stdout.
# Progress goes to stderr. Idempotent and quiet when there is nothing to do.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUIREMENTS="$GIFTCARD_REPO/tests/schemathesis.requirements.txt"
VENV="$GIFTCARD_REPO/.tools/schemathesis"
ST="$VENV/bin/st"

[[ -f "$REQUIREMENTS" ]] || die "$REQUIREMENTS is missing: restore it from git"
PINNED="$(sed -n 's/^schemathesis==\([0-9.]*\).*/\1/p' "$REQUIREMENTS" | head -n 1)"
[[ -n "$PINNED" ]] || die "no 'schemathesis==X.Y.Z' line in $REQUIREMENTS: fix the pin"

# Installed from these very requirements already?
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ -x "$ST" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  printf '%s\n' "$ST"
  exit 0
fi

require_cmd python3 "run 'apt-get install python3 python3-venv'"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
  die "schemathesis needs Python >= 3.9, python3 is $(python3 --version 2>&1): install a newer python3"
info "installing schemathesis $PINNED into $VENV (hash-checked)"
rm -rf "$VENV"
python3 -m venv "$VENV" ||
  die "python3 -m venv failed (above): run 'apt-get install python3-venv', then re-run"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --require-hashes --no-deps --only-binary :all: -r "$REQUIREMENTS" >&2 ||
  die "installing schemathesis failed (above): check the network to PyPI, then re-run $0"
"$ST" --version >/dev/null || die "$ST does not run after installing it: remove $VENV and re-run"
printf '%s\n' "$want" >"$stamp"
info "schemathesis $("$ST" --version 2>&1 | tr -d '\n')"
printf '%s\n' "$ST"
