#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and end-to-end tests against
# real NATS and PostgreSQL (the Rust test harness starts its own servers on
# free ports; this script makes sure the binaries are there).
#
#   ./scripts/test.sh                     all tests
#   ./scripts/test.sh --lint              cargo fmt --check, clippy,
#                                         cargo deny (licenses, bans,
#                                         sources), ./scripts/check-msrv.sh and
#                                         ./scripts/check-deploy.sh first
#                                         (always done when CI is set)
#   ./scripts/test.sh --no-fail-fast      extra arguments go to `cargo test`
#   ./scripts/test.sh -- some_test_name   arguments after `--` go to the
#                                         test binaries
#   ./scripts/test.sh --nemesis-minutes 30 [--seed 7]
#                                         only the nemesis, for that long,
#                                         with that seed (default: a random
#                                         one, printed); its report at the end
#
# Environment: GIFTCARD_TEST_THREADS (default 2), GIFTCARD_PG_BIN (where
# initdb/pg_ctl/postgres live, found automatically otherwise),
# GIFTCARD_NEMESIS_SECONDS and GIFTCARD_NEMESIS_SEED (what the nemesis flags
# set; unset, the nemesis runs its fixed CI seeds for 90 s each).
# GIFTCARD_CHROMIUM / GIFTCARD_CHROMEDRIVER (the console's browser test;
# scripts/install-chromium.sh installs Debian's when missing). Screenshots
# of the console's browser test land in target/test-artifacts/console/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$SECONDS
lint=0
[[ -n "${CI:-}" ]] && lint=1
cargo_args=()
harness_args=()
nemesis_minutes=""
nemesis_seed=""
while (($#)); do
  case "$1" in
    --lint) lint=1 ;;
    --nemesis-minutes)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--nemesis-minutes needs a whole number of minutes, e.g. --nemesis-minutes 30"
      nemesis_minutes=$2
      shift
      ;;
    --seed)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || die "--seed needs a whole number, e.g. --seed 7"
      nemesis_seed=$2
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    --)
      shift
      harness_args=("$@")
      break
      ;;
    *) cargo_args+=("$1") ;;
  esac
  shift
done

# The harness's PostgreSQL clusters, NATS stores and browser profiles live
# under one directory per run, removed at the end: a cluster shared by a
# whole test binary is never dropped, and a killed run leaves its files.
GIFTCARD_TEST_TMP="$(mktemp -d "${TMPDIR:-/tmp}/giftcard-test.XXXXXX")"
chmod 755 "$GIFTCARD_TEST_TMP" # PostgreSQL runs as `postgres` when we are root
export TMPDIR="$GIFTCARD_TEST_TMP"

finish() {
  local status=$? elapsed=$((SECONDS - started))
  if ((status != 0)) && [[ -d "$GIFTCARD_TEST_TMP/giftcard-test-logs" ]]; then
    rm -rf "$GIFTCARD_REPO/target/test-artifacts/process-logs"
    mkdir -p "$GIFTCARD_REPO/target/test-artifacts"
    mv "$GIFTCARD_TEST_TMP/giftcard-test-logs" "$GIFTCARD_REPO/target/test-artifacts/process-logs"
    info "the test processes' logs are in target/test-artifacts/process-logs/"
  fi
  rm -rf "$GIFTCARD_TEST_TMP"
  if ((status == 0)); then
    info "all done in $((elapsed / 60))m$((elapsed % 60))s"
  else
    info "FAILED (exit $status) after $((elapsed / 60))m$((elapsed % 60))s"
  fi
}
trap finish EXIT

cd "$GIFTCARD_REPO"
require_cmd cargo "install the Rust toolchain (https://rustup.rs), then re-run ./scripts/test.sh"

info "checking the NATS server binary"
GIFTCARD_NATS_SERVER="$("$GIFTCARD_REPO/scripts/install-nats.sh")" ||
  die "scripts/install-nats.sh failed (see above); fix that and re-run ./scripts/test.sh"
export GIFTCARD_NATS_SERVER
info "NATS server: $GIFTCARD_NATS_SERVER ($("$GIFTCARD_NATS_SERVER" --version))"

info "checking the PostgreSQL server binaries"
GIFTCARD_PG_BIN="$(pg_bindir)"
for bin in initdb pg_ctl postgres; do
  [[ -x "$GIFTCARD_PG_BIN/$bin" ]] ||
    die "$GIFTCARD_PG_BIN/$bin is missing: run 'apt-get install postgresql-15' (or set GIFTCARD_PG_BIN to a directory holding initdb, pg_ctl and postgres)"
done
export GIFTCARD_PG_BIN
info "PostgreSQL binaries: $GIFTCARD_PG_BIN ($("$GIFTCARD_PG_BIN/postgres" --version))"
if [[ "$(id -u)" -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  die "running as root, and PostgreSQL refuses to run as root, but there is no 'postgres' user to run it as: run 'apt-get install postgresql-15' or 'useradd --system postgres'"
fi

info "checking schemathesis (the HTTP fuzzer of the fuzz:: test)"
GIFTCARD_SCHEMATHESIS="$("$GIFTCARD_REPO/scripts/install-schemathesis.sh")" ||
  die "scripts/install-schemathesis.sh failed (see above); fix that and re-run ./scripts/test.sh"
export GIFTCARD_SCHEMATHESIS

if ((lint)); then
  cargo fmt --version >/dev/null 2>&1 ||
    die "rustfmt is not installed: run 'rustup component add rustfmt'"
  cargo clippy --version >/dev/null 2>&1 ||
    die "clippy is not installed: run 'rustup component add clippy'"
  info "cargo fmt --all --check"
  cargo fmt --all --check ||
    die "code is not formatted: run 'cargo fmt --all', then re-run"
  info "cargo clippy --workspace --all-targets --locked -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings ||
    die "clippy found problems (above): fix them, then re-run"
  info "cargo deny check licenses bans sources"
  deny="$("$GIFTCARD_REPO/scripts/install-cargo-deny.sh")" ||
    die "scripts/install-cargo-deny.sh failed (above); fix that and re-run"
  "$deny" --log-level error check licenses bans sources ||
    die "cargo deny found a dependency that deny.toml does not allow (above): change the dependency or, after review, deny.toml"
  info "./scripts/check-msrv.sh"
  "$GIFTCARD_REPO/scripts/check-msrv.sh" ||
    die "the minimum supported Rust version is not true (above): fix it, then re-run"
  info "./scripts/check-deploy.sh"
  "$GIFTCARD_REPO/scripts/check-deploy.sh" ||
    die "the deployment files are invalid (above): fix them, then re-run ./scripts/check-deploy.sh"
fi

if [[ -n "$nemesis_minutes" || -n "$nemesis_seed" ]]; then
  export GIFTCARD_NEMESIS_SECONDS=$((${nemesis_minutes:-10} * 60))
  export GIFTCARD_NEMESIS_SEED="${nemesis_seed:-$((RANDOM * 32768 + RANDOM))}"
  info "nemesis only: seed $GIFTCARD_NEMESIS_SEED for ${GIFTCARD_NEMESIS_SECONDS}s (progress below; the report comes at the end)"
  cargo test -p giftcard-tests --locked --test nemesis "${cargo_args[@]}" -- --nocapture "${harness_args[@]}" ||
    die "the nemesis found anomalies or failed (report above); re-run it with --seed $GIFTCARD_NEMESIS_SEED"
  exit 0
fi
info "checking Chromium and chromedriver (the console's browser test)"
browser_env="$("$GIFTCARD_REPO/scripts/install-chromium.sh")" ||
  die "scripts/install-chromium.sh failed (see above); fix that and re-run ./scripts/test.sh"
while IFS= read -r line; do export "${line?}"; done <<<"$browser_env"

threads="${GIFTCARD_TEST_THREADS:-2}"
info "cargo test --workspace --locked ${cargo_args[*]} -- --test-threads=$threads ${harness_args[*]}"
cargo test --workspace --locked "${cargo_args[@]}" -- --test-threads="$threads" "${harness_args[@]}" ||
  die "tests failed (see above); re-run one with ./scripts/test.sh -- <test name> --nocapture"
