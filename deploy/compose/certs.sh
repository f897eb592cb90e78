#!/usr/bin/env bash
# Makes the TLS files of the compose NATS cluster with openssl: a private CA
# and one server certificate that all three nodes share. compose.yaml runs
# it as the one-shot service `nats-certs` before the NATS nodes start; it
# runs on a host with bash and openssl just as well.
#
#   certs.sh [ACTION] DIR
#
# Writes, under DIR:
#   private/ca.key, private/ca.crt   the signing CA (never mounted elsewhere)
#   server/server.crt, server.key    the nodes' certificate: names nats,
#                                    nats-1, nats-2, nats-3, localhost,
#                                    127.0.0.1; serverAuth and clientAuth
#                                    (routes are mutual TLS)
#   server/ca.crt, public/ca.crt     the CA bundle that nodes (routes) and
#                                    clients (NATS_TLS_CA_FILE) trust
#
# ACTION (default: ensure):
#   ensure         create what is missing; issue a new server certificate
#                  when the current one expires within 30 days. Idempotent.
#   renew-server   issue a new server key and certificate now.
#   add-ca         CA rotation, step 1: create the next CA and trust it next
#                  to the current one.
#   switch-ca      step 2: sign with the next CA from now on (the previous
#                  one stays trusted) and issue a new server certificate.
#   drop-old-ca    step 3: stop trusting the previous CA.
#
# After any action, reload the nodes (docker compose kill -s HUP nats-1
# nats-2 nats-3) and, when the bundle changed, restart the clients; the
# full procedure is in docs/security.md ("Certificates").
set -euo pipefail

CA_DAYS=3650
SERVER_DAYS=365
RENEW_WITHIN_DAYS=30
SERVER_NAMES="DNS:nats,DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1"

die() {
  printf 'certs.sh: ERROR: %s\n' "$*" >&2
  exit 1
}
say() { printf 'certs.sh: %s\n' "$*" >&2; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

action=ensure
case "${1:-}" in
  ensure | renew-server | add-ca | switch-ca | drop-old-ca)
    action="$1"
    shift
    ;;
  -h | --help | "") usage ;;
esac
[[ $# -eq 1 ]] || usage
dir="$1"

command -v openssl >/dev/null 2>&1 || die "openssl is not installed: install it (apt-get install openssl) and re-run"
mkdir -p -m 755 "$dir" "$dir/server" "$dir/public"
umask 077
mkdir -p "$dir/private"
private="$dir/private"

# new_ca NAME: a self-signed CA key and certificate, private/NAME.{key,crt}.
new_ca() {
  local name="$1" tmp
  tmp="$(mktemp -d "$private/.new.XXXXXX")"
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
  printf '%s\n' \
    '[req]' 'distinguished_name = dn' 'x509_extensions = ca' 'prompt = no' \
    '[dn]' "CN = giftcard NATS CA $(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    '[ca]' 'basicConstraints = critical, CA:TRUE, pathlen:0' \
    'keyUsage = critical, keyCertSign, cRLSign' 'subjectKeyIdentifier = hash' >"$tmp/ca.cnf"
  openssl req -x509 -new -sha256 -days "$CA_DAYS" -key "$tmp/ca.key" -config "$tmp/ca.cnf" \
    -out "$tmp/ca.crt" 2>/dev/null
  mv "$tmp/ca.key" "$private/$name.key"
  mv "$tmp/ca.crt" "$private/$name.crt"
  rm -rf "$tmp"
  say "created CA $private/$name.crt (valid $CA_DAYS days)"
}

# issue_server: a new key and certificate for the nodes, signed by private/ca.
issue_server() {
  local tmp
  tmp="$(mktemp -d "$private/.new.XXXXXX")"
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key"
  openssl req -new -sha256 -key "$tmp/server.key" -subj "/CN=nats" -out "$tmp/server.csr"
  printf '%s\n' 'basicConstraints = critical, CA:FALSE' \
    'keyUsage = critical, digitalSignature' 'extendedKeyUsage = serverAuth, clientAuth' \
    "subjectAltName = $SERVER_NAMES" 'subjectKeyIdentifier = hash' \
    'authorityKeyIdentifier = keyid' >"$tmp/server.ext"
  openssl x509 -req -sha256 -days "$SERVER_DAYS" -in "$tmp/server.csr" \
    -CA "$private/ca.crt" -CAkey "$private/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$tmp/server.ext" -out "$tmp/server.crt" 2>/dev/null
  openssl verify -CAfile "$private/ca.crt" "$tmp/server.crt" >/dev/null ||
    die "the new server certificate does not verify against $private/ca.crt"
  # The nodes run as root in the nats image; the key stays 0600. Key
  # first, so that a reload between the two moves sees a pair at worst
  # once the certificate lands.
  mv "$tmp/server.key" "$dir/server/server.key"
  chmod 644 "$tmp/server.crt"
  mv "$tmp/server.crt" "$dir/server/server.crt"
  rm -rf "$tmp"
  say "issued $dir/server/server.crt ($SERVER_NAMES; valid $SERVER_DAYS days)"
}

# publish_bundle: the CAs to trust (previous, current, next), for the nodes
# and for the clients.
publish_bundle() {
  local bundle name
  bundle="$(mktemp "$private/.bundle.XXXXXX")"
  for name in old-ca ca next-ca; do
    [[ -f "$private/$name.crt" ]] && cat "$private/$name.crt" >>"$bundle"
  done
  install -m 644 "$bundle" "$dir/server/.ca.crt.new"
  mv "$dir/server/.ca.crt.new" "$dir/server/ca.crt"
  install -m 644 "$bundle" "$dir/public/.ca.crt.new"
  mv "$dir/public/.ca.crt.new" "$dir/public/ca.crt"
  rm -f "$bundle"
  say "trusted CAs ($(grep -c 'BEGIN CERTIFICATE' "$dir/public/ca.crt")): $dir/public/ca.crt, $dir/server/ca.crt"
}

server_needs_renewal() {
  [[ -f "$dir/server/server.crt" && -f "$dir/server/server.key" ]] || return 0
  ! openssl x509 -checkend $((RENEW_WITHIN_DAYS * 86400)) -noout -in "$dir/server/server.crt" >/dev/null ||
    ! openssl verify -CAfile "$private/ca.crt" "$dir/server/server.crt" >/dev/null 2>&1
}

case "$action" in
  ensure)
    [[ -f "$private/ca.key" && -f "$private/ca.crt" ]] || new_ca ca
    if server_needs_renewal; then
      issue_server
    else
      say "server certificate valid for more than $RENEW_WITHIN_DAYS days: kept"
    fi
    ;;
  renew-server)
    [[ -f "$private/ca.key" ]] || die "no CA in $private: run '$0 ensure $dir' first"
    issue_server
    ;;
  add-ca)
    [[ -f "$private/ca.key" ]] || die "no CA in $private: run '$0 ensure $dir' first"
    [[ ! -f "$private/next-ca.crt" ]] || die "a next CA exists already: run '$0 switch-ca $dir'"
    new_ca next-ca
    ;;
  switch-ca)
    [[ -f "$private/next-ca.key" ]] || die "no next CA: run '$0 add-ca $dir' first"
    mv "$private/ca.crt" "$private/old-ca.crt"
    rm -f "$private/ca.key"
    mv "$private/next-ca.key" "$private/ca.key"
    mv "$private/next-ca.crt" "$private/ca.crt"
    issue_server
    ;;
  drop-old-ca)
    [[ -f "$private/old-ca.crt" ]] || die "no previous CA to drop"
    rm -f "$private/old-ca.crt"
    ;;
esac
publish_bundle
