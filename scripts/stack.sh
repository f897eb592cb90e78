#!/usr/bin/env bash
# Runs the whole gift-card stack locally: NATS (JetStream) + PostgreSQL +
# migrations + giftcard-api + giftcard-worker, then creates a demo card and
# prints how to buy one.
#
#   ./scripts/stack.sh               build, start everything, stay in the
#                                    foreground; Ctrl-C stops what it started
#   ./scripts/stack.sh --detach      same, but return once it is up
#   ./scripts/stack.sh --only-infra  start only NATS and PostgreSQL, print
#                                    their URLs and return (no build)
#   ./scripts/stack.sh --release     build and run the release profile
#                                    (or GIFTCARD_PROFILE=release)
#   ./scripts/stack.sh status        show what is running
#   ./scripts/stack.sh down          stop what a --detach/--only-infra run
#                                    left running
#
# A private NATS is started only when NATS_URL is unset, a private
# PostgreSQL only when DATABASE_URL is unset. State, logs and pids live in
# <repo>/.run/ (gitignored); `source .run/env` gives a shell the same
# environment as the services.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN_DIR="$GIFTCARD_REPO/.run"
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"
ENV_FILE="$RUN_DIR/env"
READY_TIMEOUT=60

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------------------
# Arguments

ACTION=up
MODE=foreground
PROFILE="${GIFTCARD_PROFILE:-dev}"
while (($#)); do
  case "$1" in
    up) ACTION=up ;;
    down | stop) ACTION=down ;;
    status) ACTION=status ;;
    --detach | -d) MODE=detach ;;
    --only-infra) MODE=infra ;;
    --release) PROFILE=release ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1': see ./scripts/stack.sh --help" ;;
  esac
  shift
done

case "$PROFILE" in
  dev | debug) PROFILE=dev TARGET_DIR="$GIFTCARD_REPO/target/debug" ;;
  release) TARGET_DIR="$GIFTCARD_REPO/target/release" ;;
  *) die "GIFTCARD_PROFILE='$PROFILE' is not supported: use 'dev' (default) or 'release'" ;;
esac

# Where PostgreSQL's data lives: .run/pg, unless the postgres user cannot
# reach it (the repository sits under a directory only root may enter), then
# /var/tmp/giftcard-<hash of the repo path>. Remembered in .run/pg-base.
pg_base_dir() {
  if [[ -f "$RUN_DIR/pg-base" ]]; then
    cat "$RUN_DIR/pg-base"
    return 0
  fi
  local base="$RUN_DIR/pg"
  mkdir -p "$base"
  chmod 755 "$base"
  if ! pg_user_can_reach "$base"; then
    local hash
    hash="$(printf '%s' "$GIFTCARD_REPO" | sha256sum | cut -c1-12)"
    base="/var/tmp/giftcard-$hash"
    info "the postgres user cannot reach $RUN_DIR/pg (a parent directory is not traversable for it); keeping PostgreSQL's data in $base instead"
    mkdir -p "$base"
    chmod 755 "$base"
  fi
  printf '%s\n' "$base" >"$RUN_DIR/pg-base"
  printf '%s\n' "$base"
}

# ---------------------------------------------------------------------------
# status / down

# The services this script may have started, in stop order.
SERVICES=(api worker nats)

binary_of() {
  case "$1" in
    api) echo giftcard-api ;;
    worker) echo giftcard-worker ;;
    nats) echo nats-server ;;
  esac
}

pg_running_datadir() {
  # Prints the data dir of the PostgreSQL this script started, if running.
  [[ -f "$PID_DIR/postgres" ]] || return 1
  local data bindir
  data="$(<"$PID_DIR/postgres")"
  [[ -f "$data/postmaster.pid" ]] || return 1
  bindir="$(pg_bindir)"
  as_pg_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1 || return 1
  printf '%s\n' "$data"
}

do_status() {
  local svc any=0 data
  for svc in "${SERVICES[@]}"; do
    if pid_is_running "$PID_DIR/$svc.pid" "$(binary_of "$svc")"; then
      info "$svc: running (pid $(<"$PID_DIR/$svc.pid"))"
      any=1
    else
      info "$svc: not running"
    fi
  done
  if data="$(pg_running_datadir)"; then
    info "postgres: running (data dir $data, port $(sed -n 4p "$data/postmaster.pid"))"
    any=1
  else
    info "postgres: not running (or not started by this script)"
  fi
  ((any)) && [[ -f "$ENV_FILE" ]] && info "environment: source $ENV_FILE"
  return 0
}

do_down() {
  local svc pidfile data stopped=0
  for svc in "${SERVICES[@]}"; do
    pidfile="$PID_DIR/$svc.pid"
    if pid_is_running "$pidfile" "$(binary_of "$svc")"; then
      stop_pid "$(<"$pidfile")" "$svc"
      stopped=1
    fi
    rm -f "$pidfile"
  done
  if data="$(pg_running_datadir)"; then
    info "stopping postgres (data dir $data)"
    as_pg_user "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null ||
      die "pg_ctl could not stop PostgreSQL in $data: see $LOG_DIR/postgres.log, then try: runuser -u postgres -- $(pg_bindir)/pg_ctl -D $data -m immediate stop"
    stopped=1
  fi
  rm -f "$PID_DIR/postgres"
  if ((stopped)); then
    local kept="$RUN_DIR"
    if [[ -f "$RUN_DIR/pg-base" && "$(<"$RUN_DIR/pg-base")" != "$RUN_DIR/pg" ]]; then
      kept="$RUN_DIR and $(<"$RUN_DIR/pg-base")"
    fi
    info "stack stopped (data kept in $kept; delete it for a fresh start)"
  else
    info "nothing to stop: no service started by ./scripts/stack.sh is running"
  fi
}

case "$ACTION" in
  status)
    do_status
    exit 0
    ;;
  down)
    do_down
    exit 0
    ;;
esac

# ---------------------------------------------------------------------------
# up: bookkeeping of what this run started, so that Ctrl-C, a failure or
# `down` stops exactly that.

mkdir -p "$LOG_DIR" "$PID_DIR"
STARTED=()       # services this invocation started (api worker nats postgres)
REUSED=()        # private services an earlier run left running
KEEP_RUNNING=0   # set once a --detach/--only-infra run succeeded
PG_DATA=""

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local status=$? svc pidfile
  trap - EXIT INT TERM
  # Ctrl-C also ends a `| tee` reading our output: a message written to it
  # must not stop the cleanup half-way (SIGPIPE, or a failed write under -e).
  trap '' PIPE
  set +e
  if ((KEEP_RUNNING == 0 && ${#STARTED[@]} > 0)); then
    ((status == 0)) || info "stopping what this run started"
    # api first (no new purchases), then the worker (finishes its batch),
    # then the infrastructure.
    for svc in api worker nats postgres; do
      [[ " ${STARTED[*]} " == *" $svc "* ]] || continue
      if [[ "$svc" == postgres ]]; then
        info "stopping postgres"
        as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 ||
          warn "pg_ctl stop failed: run ./scripts/stack.sh down"
        rm -f "$PID_DIR/postgres"
      else
        pidfile="$PID_DIR/$svc.pid"
        [[ -f "$pidfile" ]] && stop_pid "$(<"$pidfile")" "$svc"
        rm -f "$pidfile"
      fi
    done
    info "stopped"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME LOGFILE CMD...: starts CMD in the background in its own
# session (Ctrl-C reaches only this script, which stops services in order;
# a --detach run survives the terminal), records its pid.
start_bg() {
  local name="$1" log="$2"
  shift 2
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  printf '\n===== %s starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$log"
  "${launcher[@]}" "$@" </dev/null >>"$log" 2>&1 &
  printf '%s\n' "$!" >"$PID_DIR/$name.pid"
  STARTED+=("$name")
}

# ---------------------------------------------------------------------------
# 1. NATS server binary and Rust binaries

info "checking the NATS server binary"
NATS_BIN="$("$GIFTCARD_REPO/scripts/install-nats.sh")" ||
  die "scripts/install-nats.sh failed (see above); fix that and re-run ./scripts/stack.sh"

if [[ "$MODE" != infra ]]; then
  require_cmd cargo "install the Rust toolchain (https://rustup.rs), then re-run"
  info "building binaries (cargo build --bins, profile $PROFILE)"
  build_args=(build --bins)
  [[ "$PROFILE" == release ]] && build_args+=(--release)
  (cd "$GIFTCARD_REPO" && cargo "${build_args[@]}") ||
    die "cargo build failed (see above): fix the build, then re-run ./scripts/stack.sh"
  for bin in giftcard-api giftcard-worker giftcard-migrate giftcardctl; do
    [[ -x "$TARGET_DIR/$bin" ]] ||
      die "cargo build did not produce $TARGET_DIR/$bin: check the [[bin]] names in the crates' Cargo.toml"
  done
  for svc in api worker; do
    pid_is_running "$PID_DIR/$svc.pid" "$(binary_of "$svc")" &&
      die "giftcard-$svc is already running (pid $(<"$PID_DIR/$svc.pid")) from an earlier run: stop it with ./scripts/stack.sh down, then re-run"
  done
fi

# ---------------------------------------------------------------------------
# 2. NATS

NATS_MONITOR_URL=""
# A NATS_URL/DATABASE_URL that came from `source .run/env` (it points at our
# own private server) does not count as "configured": reuse or restart ours.
from_our_env() { # from_our_env VALUE MARKER_VALUE STATE_FILE
  [[ -n "$1" ]] || return 1
  [[ "$1" == "$2" ]] && return 0
  [[ -f "$3" && "$1" == "$(<"$3")" ]]
}
if from_our_env "${NATS_URL:-}" "${GIFTCARD_STACK_NATS_URL:-}" "$RUN_DIR/nats-url"; then
  unset NATS_URL
fi
if from_our_env "${DATABASE_URL:-}" "${GIFTCARD_STACK_DATABASE_URL:-}" "$RUN_DIR/database-url"; then
  unset DATABASE_URL
fi

# The private NATS runs with the shipped accounts and permissions
# (deploy/nats/accounts.conf): each program connects as its own user, with
# passwords generated into .run/nats-conf/passwords.env.
NATS_CONF_DIR="$RUN_DIR/nats-conf"
PRIVATE_NATS=0
if [[ -n "${NATS_URL:-}" ]]; then
  info "using NATS at $NATS_URL (NATS_URL is set; not starting one; every program connects with the NATS_* credentials you set)"
elif pid_is_running "$PID_DIR/nats.pid" nats-server && [[ -f "$RUN_DIR/nats-url" ]]; then
  NATS_URL="$(<"$RUN_DIR/nats-url")"
  info "reusing the private NATS already running at $NATS_URL (pid $(<"$PID_DIR/nats.pid"))"
  REUSED+=(NATS)
  PRIVATE_NATS=1
  NATS_MONITOR_URL="$(cat "$RUN_DIR/nats-monitor-url" 2>/dev/null || true)"
else
  PRIVATE_NATS=1
  nats_port="$(preferred_port 4222)"
  nats_monitor_port="$(free_port)"
  [[ "$nats_port" == 4222 ]] || info "port 4222 is taken; the private NATS uses port $nats_port"
  mkdir -p "$RUN_DIR/nats" "$NATS_CONF_DIR"
  write_nats_passwords "$NATS_CONF_DIR/passwords.env"
  cp "$GIFTCARD_REPO/deploy/nats/accounts.conf" "$GIFTCARD_REPO/deploy/nats/permissions.conf" "$NATS_CONF_DIR/"
  cat >"$NATS_CONF_DIR/nats.conf" <<CONF
# Written by scripts/stack.sh: the private development server.
host: 127.0.0.1
port: $nats_port
http_port: $nats_monitor_port
jetstream { store_dir: "$RUN_DIR/nats" }
include ./accounts.conf
CONF
  info "starting NATS (JetStream, accounts of deploy/nats/accounts.conf) on 127.0.0.1:$nats_port, monitoring on 127.0.0.1:$nats_monitor_port, log $LOG_DIR/nats.log"
  # Not exported: each reaches the server alone, through the assignments below.
  # shellcheck disable=SC1091
  source "$NATS_CONF_DIR/passwords.env"
  GIFTCARD_NATS_API_PASSWORD="$GIFTCARD_NATS_API_PASSWORD" \
    GIFTCARD_NATS_API_ALT_PASSWORD="$GIFTCARD_NATS_API_ALT_PASSWORD" \
    GIFTCARD_NATS_WORKER_PASSWORD="$GIFTCARD_NATS_WORKER_PASSWORD" \
    GIFTCARD_NATS_WORKER_ALT_PASSWORD="$GIFTCARD_NATS_WORKER_ALT_PASSWORD" \
    GIFTCARD_NATS_PROVISIONER_PASSWORD="$GIFTCARD_NATS_PROVISIONER_PASSWORD" \
    GIFTCARD_NATS_OPERATOR_PASSWORD="$GIFTCARD_NATS_OPERATOR_PASSWORD" \
    GIFTCARD_NATS_SYS_PASSWORD="$GIFTCARD_NATS_SYS_PASSWORD" \
    start_bg nats "$LOG_DIR/nats.log" "$NATS_BIN" -c "$NATS_CONF_DIR/nats.conf"
  if ! wait_for_port 127.0.0.1 "$nats_port" 30 "$(<"$PID_DIR/nats.pid")"; then
    show_log_tail "$LOG_DIR/nats.log"
    die "NATS did not start listening on 127.0.0.1:$nats_port (log above): fix the cause, or set NATS_URL to an existing server, and re-run"
  fi
  NATS_URL="nats://127.0.0.1:$nats_port"
  printf '%s\n' "$NATS_URL" >"$RUN_DIR/nats-url"
  NATS_MONITOR_URL="http://127.0.0.1:$nats_monitor_port"
  printf '%s\n' "$NATS_MONITOR_URL" >"$RUN_DIR/nats-monitor-url"
fi
export NATS_URL

# ---------------------------------------------------------------------------
# 3. PostgreSQL

PG_BIN=""
if [[ -n "${DATABASE_URL:-}" ]]; then
  info "using the PostgreSQL in DATABASE_URL (set; not starting one)"
else
  PG_BIN="$(pg_bindir)"
  PG_BASE="$(pg_base_dir)"
  PG_DATA="$PG_BASE/data"
  PG_LOG="$PG_BASE/postgres.log"
  if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 ||
      die "running as root but there is no 'postgres' user: run 'apt-get install postgresql-15' (it creates it) or 'useradd --system postgres'"
    PG_OWNER=postgres
  else
    PG_OWNER="$(id -un)"
  fi

  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    info "initialising a PostgreSQL cluster in $PG_DATA (once)"
    mkdir -p "$PG_DATA"
    chown "$PG_OWNER" "$PG_DATA"
    chmod 700 "$PG_DATA"
    if ! as_pg_user "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust -U postgres \
      --encoding=UTF8 --locale=C >"$LOG_DIR/initdb.log" 2>&1; then
      show_log_tail "$LOG_DIR/initdb.log"
      die "initdb failed (log above): fix the cause, delete $PG_DATA and re-run"
    fi
  else
    data_version="$(<"$PG_DATA/PG_VERSION")"
    bin_version="$("$PG_BIN/postgres" --version | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p')"
    [[ "$data_version" == "$bin_version" ]] ||
      die "$PG_DATA was created by PostgreSQL $data_version but $PG_BIN is version $bin_version: delete $PG_DATA (the demo data goes with it) or set GIFTCARD_PG_BIN to PostgreSQL $data_version's bin directory"
  fi

  # The log must be writable by the server's user; keep a link in .run/logs.
  touch "$PG_LOG"
  chown "$PG_OWNER" "$PG_LOG"
  [[ "$PG_LOG" == "$LOG_DIR/postgres.log" ]] || ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"

  if as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    pg_port="$(sed -n 4p "$PG_DATA/postmaster.pid")"
    info "reusing the private PostgreSQL already running on port $pg_port"
    REUSED+=(PostgreSQL)
  else
    pg_port="$(preferred_port 5432)"
    [[ "$pg_port" == 5432 ]] || info "port 5432 is taken; the private PostgreSQL uses port $pg_port"
    info "starting PostgreSQL on 127.0.0.1:$pg_port, log $LOG_DIR/postgres.log"
    STARTED+=(postgres)
    printf '%s\n' "$PG_DATA" >"$PID_DIR/postgres"
    if ! as_pg_user "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
      -o "-p $pg_port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null; then
      show_log_tail "$PG_LOG"
      die "PostgreSQL did not start (log above): fix the cause (a stale $PG_DATA/postmaster.pid? a full disk?) and re-run"
    fi
  fi

  psql_admin() {
    "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" \
      -U postgres -d postgres "$@"
  }
  if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'giftcard'")" != 1 ]]; then
    info "creating role giftcard"
    psql_admin -c "CREATE ROLE giftcard LOGIN" ||
      die "could not create role giftcard: see $LOG_DIR/postgres.log"
  fi
  if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'giftcard'")" != 1 ]]; then
    info "creating database giftcard"
    psql_admin -c "CREATE DATABASE giftcard OWNER giftcard" ||
      die "could not create database giftcard: see $LOG_DIR/postgres.log"
  fi
  DATABASE_URL="postgres://giftcard@127.0.0.1:$pg_port/giftcard"
  printf '%s\n' "$DATABASE_URL" >"$RUN_DIR/database-url"
fi
export DATABASE_URL

# ---------------------------------------------------------------------------
# 4. JWT secret (never printed)

# use_secret VARIABLE FILE: keeps VARIABLE if you set it, else reads (or
# first generates) FILE; prints how .run/env should set it ("" when it came
# from your environment).
use_secret() {
  local var="$1" file="$2" value="${!1:-}"
  # The generated one, from `source .run/env`, does not count as yours.
  if [[ -n "$value" && -s "$file" && "$value" == "$(<"$file")" ]]; then
    value=""
  fi
  if [[ -n "$value" ]]; then
    ((${#value} >= 32)) ||
      die "$var is shorter than 32 bytes: set a longer one (openssl rand -hex 32) or unset it to use a generated one"
    printf -v "$var" '%s' "$value"
    export "${var?}"
    SECRET_SOURCE=""
    return
  fi
  if [[ ! -s "$file" ]]; then
    info "generating $var into $file"
    (
      umask 077
      random_hex >"$file.tmp"
    )
    mv -f "$file.tmp" "$file"
  fi
  chmod 600 "$file"
  printf -v "$var" '%s' "$(<"$file")"
  export "${var?}"
  SECRET_SOURCE="\$(cat '$file')"
}
use_secret GIFTCARD_JWT_SECRET "$RUN_DIR/jwt-secret"
JWT_SECRET_SOURCE="$SECRET_SOURCE"
use_secret GIFTCARD_MESSAGE_SECRET "$RUN_DIR/message-secret"
MESSAGE_SECRET_SOURCE="$SECRET_SOURCE"

# as_nats_user USER CMD...: runs CMD as NATS user USER of the private NATS
# (with your NATS_* settings when NATS is yours).
as_nats_user() {
  local user="$1"
  shift
  if ((PRIVATE_NATS)); then
    NATS_USER="$user" NATS_PASSWORD="$(nats_password "$NATS_CONF_DIR/passwords.env" "$user")" "$@"
  else
    "$@"
  fi
}

export GIFTCARD_API_LISTEN="${GIFTCARD_API_LISTEN:-127.0.0.1:8080}"
export GIFTCARD_WORKER_LISTEN="${GIFTCARD_WORKER_LISTEN:-127.0.0.1:9090}"
API_URL="http://$GIFTCARD_API_LISTEN"
WORKER_URL="http://$GIFTCARD_WORKER_LISTEN"
export GIFTCARD_API_URL="$API_URL"

# An env file a shell can source to talk to this stack (the secret itself is
# read from its file, not copied here).
{
  echo "# Written by scripts/stack.sh: 'source .run/env' to use the local stack."
  printf 'export NATS_URL=%q\n' "$NATS_URL"
  printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
  # Lets a later ./scripts/stack.sh tell these apart from URLs you set.
  printf 'export GIFTCARD_STACK_NATS_URL=%q\n' "$NATS_URL"
  printf 'export GIFTCARD_STACK_DATABASE_URL=%q\n' "$DATABASE_URL"
  [[ -n "$JWT_SECRET_SOURCE" ]] && printf 'export GIFTCARD_JWT_SECRET="%s"\n' "$JWT_SECRET_SOURCE"
  [[ -n "$MESSAGE_SECRET_SOURCE" ]] && printf 'export GIFTCARD_MESSAGE_SECRET="%s"\n' "$MESSAGE_SECRET_SOURCE"
  if ((PRIVATE_NATS)); then
    # A shell is an operator: read-only NATS access (`nats stream report`).
    echo "export NATS_USER=giftcard-operator"
    printf 'export NATS_PASSWORD="$(. %q; echo "$GIFTCARD_NATS_OPERATOR_PASSWORD")"\n' "$NATS_CONF_DIR/passwords.env"
  fi
  printf 'export GIFTCARD_API_LISTEN=%q\n' "$GIFTCARD_API_LISTEN"
  printf 'export GIFTCARD_WORKER_LISTEN=%q\n' "$GIFTCARD_WORKER_LISTEN"
  printf 'export GIFTCARD_API_URL=%q\n' "$API_URL"
} >"$ENV_FILE"

if [[ "$MODE" == infra ]]; then
  KEEP_RUNNING=1
  cat <<EOF

Infrastructure is up.
  NATS_URL=$NATS_URL${NATS_MONITOR_URL:+   (monitoring: $NATS_MONITOR_URL)}
  DATABASE_URL=$DATABASE_URL
  NATS users:               giftcard-api, giftcard-worker, giftcard-provisioner,
                            giftcard-operator; passwords in $NATS_CONF_DIR/passwords.env
  Before the services:      NATS_USER=giftcard-provisioner NATS_PASSWORD=... giftcard-migrate nats
  Environment for a shell:  source .run/env
  Logs:                     $LOG_DIR/
  Stop it:                  ./scripts/stack.sh down
EOF
  exit 0
fi

# ---------------------------------------------------------------------------
# 5. Migrations, NATS provisioning, api, worker

info "applying migrations (giftcard-migrate up)"
"$TARGET_DIR/giftcard-migrate" up >"$LOG_DIR/migrate.log" 2>&1 || {
  show_log_tail "$LOG_DIR/migrate.log"
  die "giftcard-migrate up failed (log above): fix the cause and re-run ./scripts/stack.sh"
}
info "provisioning the NATS streams and buckets (giftcard-migrate nats, as giftcard-provisioner)"
# A development-sized purchase stream (JetStream reserves its whole size on
# the store) unless the environment says otherwise.
GIFTCARD_PURCHASES_MAX_MIB="${GIFTCARD_PURCHASES_MAX_MIB:-1024}" \
  as_nats_user giftcard-provisioner "$TARGET_DIR/giftcard-migrate" nats >>"$LOG_DIR/migrate.log" 2>&1 || {
  show_log_tail "$LOG_DIR/migrate.log"
  die "giftcard-migrate nats failed (log above): fix the cause and re-run ./scripts/stack.sh"
}

# require_listen_free SERVICE HOST:PORT VARIABLE
require_listen_free() {
  local port="${2##*:}"
  port_is_free "$port" ||
    die "port $port ($1, $2) is already in use: stop what uses it or set $3=127.0.0.1:<free port>, then re-run"
}
require_listen_free api "$GIFTCARD_API_LISTEN" GIFTCARD_API_LISTEN
require_listen_free worker "$GIFTCARD_WORKER_LISTEN" GIFTCARD_WORKER_LISTEN

info "starting giftcard-api on $GIFTCARD_API_LISTEN, log $LOG_DIR/api.log"
as_nats_user giftcard-api start_bg api "$LOG_DIR/api.log" "$TARGET_DIR/giftcard-api"
info "starting giftcard-worker on $GIFTCARD_WORKER_LISTEN, log $LOG_DIR/worker.log"
as_nats_user giftcard-worker start_bg worker "$LOG_DIR/worker.log" "$TARGET_DIR/giftcard-worker"

info "waiting for $API_URL/readyz"
wait_for_http "$API_URL/readyz" "$READY_TIMEOUT" "$(<"$PID_DIR/api.pid")" || {
  show_log_tail "$LOG_DIR/api.log"
  die "giftcard-api did not become ready (log above): fix the cause and re-run ./scripts/stack.sh"
}
info "waiting for $WORKER_URL/healthz"
wait_for_http "$WORKER_URL/healthz" "$READY_TIMEOUT" "$(<"$PID_DIR/worker.pid")" || {
  show_log_tail "$LOG_DIR/worker.log"
  die "giftcard-worker did not become healthy (log above): fix the cause and re-run ./scripts/stack.sh"
}

# ---------------------------------------------------------------------------
# 6. Demo data: one card with 1000 codes, 100.00 in alice's wallet.

CTL="$TARGET_DIR/giftcardctl"
alice_token="$("$CTL" token --sub alice --ttl-hours 24)" ||
  die "giftcardctl token failed (see above): check GIFTCARD_JWT_SECRET and re-run"

card_id=""
if [[ -s "$RUN_DIR/demo-card-id" ]]; then
  card_id="$(<"$RUN_DIR/demo-card-id")"
  if [[ "$(http_status "$API_URL/v1/gift-cards/$card_id" "$alice_token")" == 200 ]]; then
    info "reusing demo card $card_id"
  else
    card_id=""
  fi
fi
if [[ -z "$card_id" ]]; then
  info "creating a demo gift card"
  card_json="$("$CTL" --api-url "$API_URL" --admin cards create --name "Demo card 10.00" \
    --price 10.00 --value 10.00 --json)" ||
    die "giftcardctl cards create failed (see above and $LOG_DIR/api.log)"
  card_id="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$card_json")" ||
    die "could not read the card id from giftcardctl's output: $card_json"
  printf '%s\n' "$card_id" >"$RUN_DIR/demo-card-id"
fi

codes_csv="$RUN_DIR/demo-codes-$card_id.csv"
if [[ ! -s "$codes_csv" ]]; then
  python3 - "$codes_csv" <<'PY'
import secrets, string, sys
alphabet = string.ascii_uppercase + string.digits
with open(sys.argv[1], "w") as f:
    f.write("code,expires_on\n")
    for _ in range(1000):
        code = "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
        f.write(f"{code},\n")
PY
fi
info "importing 1000 demo codes (importing them again inserts nothing)"
"$CTL" --api-url "$API_URL" --admin codes import --card "$card_id" "$codes_csv" >&2 ||
  die "giftcardctl codes import failed (see above and $LOG_DIR/api.log)"
info "crediting alice's wallet with 100.00 (once per demo card)"
"$CTL" --api-url "$API_URL" --admin wallet credit --user alice --amount 100.00 \
  --reference "demo-credit-$card_id" >/dev/null ||
  die "giftcardctl wallet credit failed (see above and $LOG_DIR/api.log)"

idem_key="demo-$(python3 -c 'import uuid; print(uuid.uuid4())')"
cat <<EOF

The gift-card stack is running.
  api:     $API_URL   (GET /readyz, /metrics, /openapi.json)
  worker:  $WORKER_URL   (GET /healthz, /readyz, /metrics)
  NATS:    $NATS_URL${NATS_MONITOR_URL:+   (monitoring: $NATS_MONITOR_URL)}
  DB:      $DATABASE_URL
  Demo card $card_id has 1000 codes at 10.00; alice has 100.00.

Buy one as alice (token valid 24 h; re-run with the same Idempotency-Key to
see the same purchase come back):

curl -sS -X POST $API_URL/v1/purchases \\
  -H 'Authorization: Bearer $alice_token' \\
  -H 'Content-Type: application/json' \\
  -H 'Idempotency-Key: $idem_key' \\
  -H 'Prefer: wait=5' \\
  -d '{"gift_card_id": "$card_id", "quantity": 1}'

or with the CLI:

$CTL --api-url $API_URL --token '$alice_token' buy --card $card_id --quantity 1 --wait 5

Environment for another shell: source .run/env   (then: $CTL token --sub alice)
Logs: $LOG_DIR/{api,worker,nats,postgres,migrate}.log
EOF

if [[ "$MODE" == detach ]]; then
  KEEP_RUNNING=1
  echo "Running in the background. Stop it with: ./scripts/stack.sh down"
  exit 0
fi

echo "Press Ctrl-C to stop everything this command started."
if ((${#REUSED[@]} > 0)); then
  echo "(${REUSED[*]} was already running before this command and stays up; ./scripts/stack.sh down stops it.)"
fi
# Stay in the foreground; if a service dies, say so and stop the rest.
watch_pids=()
for svc in "${STARTED[@]}"; do
  [[ "$svc" == postgres ]] || watch_pids+=("$(<"$PID_DIR/$svc.pid")")
done
set +e
wait -n "${watch_pids[@]}"
rc=$?
set -e
for svc in "${STARTED[@]}"; do
  [[ "$svc" == postgres ]] && continue
  if ! pid_alive "$(<"$PID_DIR/$svc.pid")"; then
    warn "$svc exited unexpectedly (status $rc)"
    show_log_tail "$LOG_DIR/$svc.log"
  fi
done
die "a service stopped; the rest is being stopped. Fix the cause (log above) and re-run ./scripts/stack.sh"
