#!/usr/bin/env bash
# Re-vendors the API reference page's JavaScript and CSS (`/docs`): fetches
# the pinned swagger-ui-dist package with npm, checks it against the
# registry's integrity hash pinned below, and copies the files the api
# embeds into api/assets/swagger-ui/ with their SHA-256 (checked by the
# api's unit tests). The files are committed: building the api needs no
# network. To upgrade, change VERSION and INTEGRITY (from
# `npm view swagger-ui-dist@<version> dist.integrity`), run this, review the
# diff, and run the tests.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="5.35.0"
INTEGRITY="sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
FILES=(swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE)
DEST="$GIFTCARD_REPO/api/assets/swagger-ui"

require_cmd npm "run 'apt-get install npm'"
require_cmd openssl "run 'apt-get install openssl'"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

info "fetching swagger-ui-dist@$VERSION"
(cd "$work" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null) ||
  die "npm pack swagger-ui-dist@$VERSION failed (above): check the network to the npm registry"
tarball="$work/swagger-ui-dist-$VERSION.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
[[ "$got" == "$INTEGRITY" ]] ||
  die "swagger-ui-dist@$VERSION has integrity $got, pinned $INTEGRITY: do not use it; check the pin"
tar -xzf "$tarball" -C "$work"

mkdir -p "$DEST"
for f in "${FILES[@]}"; do
  cp "$work/package/$f" "$DEST/$f"
done
(cd "$DEST" && sha256sum "${FILES[@]}" >SHA256SUMS)
printf 'swagger-ui-dist %s %s\n' "$VERSION" "$INTEGRITY" >"$DEST/VERSION"
info "vendored swagger-ui-dist $VERSION into $DEST"
