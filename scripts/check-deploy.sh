#!/usr/bin/env bash
# Validates the deployment files without a container engine or a cluster:
#
#   deploy/docker/Dockerfile         hadolint + structure (stages, --locked, 4 binaries, non-root)
#   deploy/compose/compose.yaml      compose-spec JSON schema (vendored, deploy/validate/) + references
#   deploy/nats/*.conf,
#   deploy/compose/nats/*.conf       nats-server -t (the pinned server, scripts/install-nats.sh)
#   deploy/k8s/*.yaml                kubernetes-validate --strict against Kubernetes 1.30 and the
#                                    newest schemas it ships, + cross-references
#   deploy/k8s/nats-values.yaml      parses; cluster of 3, JetStream file store, sync_interval always
#
# The validators come from PyPI, hash-locked in deploy/validate/requirements.txt,
# installed once into .tools/venv (re-installed only when that file changes).
# Prints one OK/FAIL line per file; exits non-zero when anything is wrong.
#
#   ./scripts/check-deploy.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUIREMENTS="$GIFTCARD_REPO/deploy/validate/requirements.txt"
VENV="$GIFTCARD_REPO/.tools/venv"
STAMP="$VENV/.check-deploy-requirements.sha256"
CHECKER="$GIFTCARD_REPO/deploy/validate/check_deploy.py"

[[ -f "$REQUIREMENTS" ]] || die "$REQUIREMENTS is missing: restore it from git"
[[ -f "$CHECKER" ]] || die "$CHECKER is missing: restore it from git"
require_cmd python3 "run 'apt-get install python3 python3-venv'"

# ---------------------------------------------------------------------------
# 1. The validators, in .tools/venv.

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$have" != "$want" ]] || ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml, jsonschema' 2>/dev/null ||
  [[ ! -x "$VENV/bin/check-jsonschema" || ! -x "$VENV/bin/hadolint" ]]; then
  info "installing the deploy validators into $VENV (deploy/validate/requirements.txt, hash-checked)"
  rm -rf "$VENV"
  mkdir -p "$GIFTCARD_REPO/.tools"
  log="$GIFTCARD_REPO/.tools/check-deploy-pip.log"
  if ! python3 -m venv "$VENV" >"$log" 2>&1; then
    show_log_tail "$log" 10
    rm -rf "$VENV"
    die "python3 cannot create a virtual environment: run 'apt-get install python3-venv' and re-run"
  fi
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --require-hashes --only-binary=:all: -r "$REQUIREMENTS" >>"$log" 2>&1; then
    show_log_tail "$log" 20
    rm -rf "$VENV"
    die "pip could not install deploy/validate/requirements.txt: check access to PyPI (proxy, PIP_INDEX_URL) and re-run; a hash mismatch means a file on the index is not the pinned one"
  fi
  printf '%s\n' "$want" >"$STAMP"
fi

# ---------------------------------------------------------------------------
# 2. The pinned NATS server (for `nats-server -t`).

nats_server="$("$GIFTCARD_REPO/scripts/install-nats.sh")" ||
  die "could not install nats-server (see above)"

# ---------------------------------------------------------------------------
# 3. The checks.

exec "$VENV/bin/python" "$CHECKER" --repo "$GIFTCARD_REPO" --nats-server "$nats_server"
