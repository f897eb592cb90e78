#!/usr/bin/env bash
# Validates the deployment files without a container engine or a cluster:
#
#   deploy/docker/Dockerfile         hadolint + structure (stages, --locked, 4 binaries, non-root)
#   deploy/compose/compose.yaml      compose-spec JSON schema (vendored, deploy/validate/) + references,
#                                    TLS and one NATS user per service
#   deploy/nats/*.conf,
#   deploy/compose/nats/*.conf       nats-server -t (the pinned server, scripts/install-nats.sh) with
#                                    throwaway passwords and certificates (deploy/compose/certs.sh);
#                                    users, TLS, mutual-TLS routes; the compose cluster is also started
#                                    on loopback ports and logged into as every user
#   deploy/k8s/**/*.yaml             kubernetes-validate --strict against Kubernetes 1.30 and the
#                                    newest schemas it ships (cert-manager and Prometheus Operator
#                                    resources: deploy/validate/crds), + cross-references; what the
#                                    NetworkPolicies allow and deny
#   deploy/k8s/nats-values.yaml      cluster of 3, JetStream file store, sync_interval always, TLS,
#                                    verbatim copies of accounts.conf and permissions.conf
#   deploy/monitoring/               promtool check rules / test rules; the dashboard's queries
#
# The validators come from PyPI, hash-locked in deploy/validate/requirements.txt,
# installed once into .tools/venv (re-installed only when that file changes);
# promtool from Debian's `prometheus` package (installed when missing).
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
# 3. promtool (for the alert rules and their unit tests), from Debian.

promtool_ok() {
  command -v promtool >/dev/null 2>&1 && promtool test rules --help >/dev/null 2>&1
}
if ! promtool_ok; then
  info "installing promtool (Debian package prometheus) for the alert rules and their tests"
  log="$GIFTCARD_REPO/.tools/check-deploy-apt.log"
  mkdir -p "$GIFTCARD_REPO/.tools"
  install_promtool() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >>"$log" 2>&1
  }
  : >"$log"
  if ! install_promtool; then
    # A stale package list is the usual cause: refresh it once.
    apt-get update >>"$log" 2>&1 || true
    install_promtool || {
      show_log_tail "$log" 15
      die "could not install promtool: run 'apt-get install prometheus' as root (or put a promtool >= 2.5 with 'test rules' on PATH) and re-run"
    }
  fi
  promtool_ok || die "promtool is installed but has no 'test rules' command: install a promtool >= 2.5 and re-run"
fi
info "promtool: $(promtool --version 2>&1 | head -n 1)"

# ---------------------------------------------------------------------------
# 4. The checks.

exec "$VENV/bin/python" "$CHECKER" --repo "$GIFTCARD_REPO" --nats-server "$nats_server" \
  --promtool "$(command -v promtool)"
