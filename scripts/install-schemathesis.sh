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

# The newest Python there is: CPython 3.11 fails at random inside
# ast.parse ("AST constructor recursion depth mismatch", CPython
# gh-106905) when Hypothesis describes its strategies, which made the
# fuzzing test fail for no fault of the api.
python=""
pyenv_root="$(pyenv root 2>/dev/null || true)"
mapfile -t pyenv_pythons < <(ls -d "${pyenv_root:-/nonexistent}"/versions/3.1[2-9].*/bin/python3 2>/dev/null | sort -rV)
for candidate in python3.13 python3.12 "${pyenv_pythons[@]}" python3; do
  if command -v "$candidate" >/dev/null &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
[[ -n "$python" ]] ||
  die "schemathesis needs Python >= 3.9 (3.12 or newer preferred): run 'apt-get install python3 python3-venv'"

# Installed from these very requirements, with this Python, already?
stamp="$VENV/.requirements.sha256"
want="$({ cat "$REQUIREMENTS"; "$python" --version; } | sha256sum | cut -d' ' -f1)"
if [[ -x "$ST" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  printf '%s\n' "$ST"
  exit 0
fi

info "installing schemathesis $PINNED into $VENV with $("$python" --version) (hash-checked)"
rm -rf "$VENV"
"$python" -m venv "$VENV" ||
  die "python3 -m venv failed (above): run 'apt-get install python3-venv', then re-run"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --require-hashes --no-deps --only-binary :all: -r "$REQUIREMENTS" >&2 ||
  die "installing schemathesis failed (above): check the network to PyPI, then re-run $0"
"$ST" --version >/dev/null || die "$ST does not run after installing it: remove $VENV and re-run"
printf '%s\n' "$want" >"$stamp"
info "schemathesis $("$ST" --version 2>&1 | tr -d '\n')"
printf '%s\n' "$ST"
