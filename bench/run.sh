#!/usr/bin/env bash
# Runs the whole benchmark on this machine and writes the report:
#   bench/results/<timestamp>/{report.md,results.json,chart.svg,flame-*.svg,logs-*}
#   bench/results/latest.{md,json,svg}
#
#   ./bench/run.sh                                  everything (about 20 minutes on 2 cores, plus the first build)
#   ./bench/run.sh --suites compare --scenarios hot --strategies pipeline,skip-locked
#   ./bench/run.sh --help                           every option
#
# Suites, in the order they run: sql (pgbench and EXPLAIN of the peers' SQL;
# the peers then use the sweep's best pool size), compare (pipeline vs peers,
# CPU per purchase by process), profile (perf flame graphs of api, worker
# and PostgreSQL), soak (probe, 400k purchases, probe), cluster (3-node
# NATS, R3, sync_interval always), scale (1, 2, 4, 8 CPU-limited workers;
# needs root and the cgroup cpu controller).
#
# It installs what it needs (pgbench and psql from postgresql-15, perf from
# linux-perf, inferno into .tools/), builds release binaries, and starts its
# own PostgreSQL (default durability) and NATS servers on free ports. Run it
# on a quiet machine: everything shares the cores it measures.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$GIFTCARD_REPO"

INFERNO_VERSION="0.12.8"

apt_install() { # PACKAGE...
  if [[ "$(id -u)" != 0 ]]; then
    die "missing $*: install with \`sudo apt-get install -y $*\`, then run ./bench/run.sh again"
  fi
  info "installing $* (apt-get)"
  apt-get update -qq >&2 || die "apt-get update failed: check the network, then run ./bench/run.sh again"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
    || die "apt-get install $* failed: install it by hand, then run ./bench/run.sh again"
}

if ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1; then
  apt_install postgresql-15
fi
if ! perf --version >/dev/null 2>&1; then
  apt_install linux-perf
fi
if [[ ! -x .tools/bin/inferno-flamegraph || ! -x .tools/bin/inferno-collapse-perf ]]; then
  info "installing inferno $INFERNO_VERSION into .tools/ (cargo install, about a minute)"
  cargo install --quiet --locked --root .tools inferno --version "$INFERNO_VERSION" \
    || die "cargo install inferno failed: check crates.io access, then run ./bench/run.sh again"
fi

GIFTCARD_NATS_SERVER="$(./scripts/install-nats.sh)"
export GIFTCARD_NATS_SERVER
info "building release binaries (the first time takes several minutes)"
cargo build --release --locked --bins \
  -p giftcard-api -p giftcard-worker -p giftcard-peer -p giftcard-loadgen -p giftcard-runner
exec target/release/giftcard-bench "$@"
