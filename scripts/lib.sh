# shellcheck shell=bash
# Helpers shared by the scripts in this directory. Source it, do not run it:
#
#   # shellcheck source=scripts/lib.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything here prints progress and errors on stderr, so that a function's
# stdout can be captured (`port=$(free_port)`).

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "scripts/lib.sh is a library: source it from another script" >&2
  exit 2
fi

# Absolute path of the repository (the parent of scripts/).
GIFTCARD_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export GIFTCARD_REPO

# Minimum NATS server version the project needs (docs/design.md: >= 2.12).
# shellcheck disable=SC2034 # used by the scripts that source this file
GIFTCARD_NATS_MIN_VERSION="2.12.0"

# ---------------------------------------------------------------------------
# Messages

_log_prefix() { printf '[%s %s]' "$(basename "${0}")" "$(date +%H:%M:%S)"; }

# info MESSAGE...: a progress line.
info() { printf '%s %s\n' "$(_log_prefix)" "$*" >&2; }

# warn MESSAGE...: something the user should know about, not fatal.
warn() { printf '%s WARNING: %s\n' "$(_log_prefix)" "$*" >&2; }

# die MESSAGE...: an error, saying what to do next; exits 1.
die() {
  printf '%s ERROR: %s\n' "$(_log_prefix)" "$*" >&2
  exit 1
}

# require_cmd CMD HOW_TO_INSTALL: fail unless CMD is on PATH.
require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

# show_log_tail FILE [LINES]: prints the last lines of a log file on stderr.
show_log_tail() {
  local file="$1" lines="${2:-30}"
  if [[ -f "$file" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2 || true
    printf -- '----- end of %s -----\n' "$file" >&2
  else
    printf -- '(no log file at %s)\n' "$file" >&2
  fi
}

# ---------------------------------------------------------------------------
# Versions

# version_ge A B: true when version A >= version B (dotted numbers, an
# optional leading "v" is ignored).
version_ge() {
  local a="${1#v}" b="${2#v}"
  [[ "$(printf '%s\n%s\n' "$a" "$b" | sort -V | head -n 1)" == "$b" ]]
}

# nats_server_version BIN: prints the version of a nats-server binary
# ("2.12.8"), or fails.
nats_server_version() {
  local out
  out="$("$1" --version 2>&1)" || return 1
  # "nats-server: v2.12.8"
  out="${out##*v}"
  [[ "$out" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || return 1
  printf '%s\n' "$out"
}

# ---------------------------------------------------------------------------
# Ports and HTTP

# port_is_free PORT: true if nothing listens on 127.0.0.1:PORT (tries to
# bind it, which also catches servers listening on 0.0.0.0). SO_REUSEADDR,
# as servers use it, so that closed connections in TIME_WAIT do not count.
port_is_free() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# free_port: prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' || die "could not find a free TCP port (is python3 installed? apt-get install python3)"
}

# preferred_port PORT: prints PORT if it is free, else some free port.
preferred_port() {
  if port_is_free "$1"; then
    printf '%s\n' "$1"
  else
    free_port
  fi
}

# port_answers HOST PORT: true if a TCP connection to HOST:PORT succeeds.
port_answers() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# http_status URL [BEARER_TOKEN]: prints the HTTP status code of a GET
# (000 when nothing answers).
http_status() {
  local url="$1" token="${2:-}"
  if command -v curl >/dev/null 2>&1; then
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 5)
    [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
    curl "${args[@]}" "$url" 2>/dev/null || true
  else
    python3 - "$url" "$token" <<'PY' 2>/dev/null || printf '000\n'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
  fi
}

# wait_for_http URL TIMEOUT_SECS [PID]: waits until URL answers 200. Fails
# after TIMEOUT_SECS, or at once if PID (the server's process) has exited.
wait_for_http() {
  local url="$1" timeout="$2" pid="${3:-}" deadline status
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    status="$(http_status "$url")"
    [[ "$status" == "200" ]] && return 0
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      warn "the process behind $url (pid $pid) has exited"
      return 1
    fi
    sleep 0.5
  done
  warn "$url did not answer 200 within ${timeout}s (last status: ${status:-none})"
  return 1
}

# wait_for_port HOST PORT TIMEOUT_SECS [PID]: waits until HOST:PORT accepts
# TCP connections; fails early if PID has exited.
wait_for_port() {
  local host="$1" port="$2" timeout="$3" pid="${4:-}" deadline
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    port_answers "$host" "$port" && return 0
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      return 1
    fi
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------------------
# Processes

# pid_is_running PIDFILE NAME: true if the pid in PIDFILE is alive and its
# command line mentions NAME (guards against a recycled pid).
pid_is_running() {
  local pidfile="$1" name="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

# pid_alive PID: true if PID runs (an exited process waiting to be reaped,
# a zombie, does not count).
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z ]]
}

# stop_pid PID NAME [TIMEOUT_SECS]: SIGTERM, then SIGKILL after the timeout.
stop_pid() {
  local pid="$1" name="$2" timeout="${3:-20}" deadline
  pid_alive "$pid" || return 0
  info "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + timeout))
  while pid_alive "$pid"; do
    if ((SECONDS >= deadline)); then
      warn "$name (pid $pid) did not stop within ${timeout}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  # Reap it if it is our child; harmless otherwise.
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# PostgreSQL

# pg_bindir: prints the directory holding the PostgreSQL server binaries
# (initdb, pg_ctl, postgres, psql). GIFTCARD_PG_BIN wins, then
# `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
pg_bindir() {
  local dir
  if [[ -n "${GIFTCARD_PG_BIN:-}" ]]; then
    [[ -x "$GIFTCARD_PG_BIN/initdb" && -x "$GIFTCARD_PG_BIN/pg_ctl" ]] ||
      die "GIFTCARD_PG_BIN=$GIFTCARD_PG_BIN does not contain initdb and pg_ctl: point it at a PostgreSQL bin directory (e.g. /usr/lib/postgresql/15/bin) or unset it"
    printf '%s\n' "$GIFTCARD_PG_BIN"
    return 0
  fi
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
    printf '%s\n' "$dir"
    return 0
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: run 'apt-get install postgresql-15' (or set GIFTCARD_PG_BIN to their directory)"
}

# as_pg_user CMD...: runs CMD as the `postgres` user when we are root
# (PostgreSQL refuses to run as root), else as ourselves.
as_pg_user() {
  if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 ||
      die "running as root but there is no 'postgres' user: run 'apt-get install postgresql-15' (it creates it) or 'useradd --system postgres'"
    # From /, as the current directory may be closed to postgres.
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# pg_user_can_reach DIR: true if the user that runs PostgreSQL can traverse
# DIR (every parent must be executable for it).
pg_user_can_reach() {
  as_pg_user test -x "$1" 2>/dev/null
}

# random_hex: 32 random bytes as hex, for generated secrets.
random_hex() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -hex 32
  else
    python3 -c 'import secrets; print(secrets.token_hex(32))'
  fi
}

# The NATS users of deploy/nats/accounts.conf and the variables holding
# their passwords.
NATS_PASSWORD_VARS=(API API_ALT WORKER WORKER_ALT PROVISIONER OPERATOR SYS)

# write_nats_passwords FILE: generates a password for every NATS user into
# FILE (mode 600) unless it exists. Each starts with a letter: the NATS
# configuration parser would read a value like "3e51..." as a number.
write_nats_passwords() {
  local file="$1" v
  [[ -s "$file" ]] && return 0
  (
    umask 077
    for v in "${NATS_PASSWORD_VARS[@]}"; do
      printf 'GIFTCARD_NATS_%s_PASSWORD=n%s\n' "$v" "$(random_hex)"
    done >"$file.tmp"
  )
  mv -f "$file.tmp" "$file"
}

# nats_password FILE USER: the password of NATS user USER (giftcard-api,
# giftcard-worker, giftcard-provisioner, giftcard-operator, sys) in FILE.
nats_password() {
  local var
  var="$(printf '%s' "${2#giftcard-}" | tr 'a-z-' 'A-Z_')"
  sed -n "s/^GIFTCARD_NATS_${var}_PASSWORD=//p" "$1"
}
