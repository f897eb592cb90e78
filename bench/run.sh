#!/usr/bin/env bash
# Runs the whole benchmark comparison on this machine and writes the report:
#   bench/results/<timestamp>/{report.md,results.json,chart.svg,logs-*}
#   bench/results/latest.{md,json,svg}
#
#   ./bench/run.sh                                  everything (about 8 minutes)
#   ./bench/run.sh --scenarios hot --strategies pipeline,skip-locked
#   ./bench/run.sh --help                           every option
#
# It builds release binaries, starts its own PostgreSQL (default durability)
# and, for the pipeline, a fresh NATS server per run, on free ports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GIFTCARD_NATS_SERVER="$(./scripts/install-nats.sh)"
export GIFTCARD_NATS_SERVER
echo "[bench] building release binaries (the first time takes several minutes)" >&2
cargo build --release --locked --bins \
  -p giftcard-api -p giftcard-worker -p giftcard-peer -p giftcard-loadgen -p giftcard-runner
exec target/release/giftcard-bench "$@"
