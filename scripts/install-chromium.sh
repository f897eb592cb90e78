#!/usr/bin/env bash
# Makes Debian's headless browser for the console's browser test exist:
# `chromium` and its WebDriver server `chromedriver` (package
# chromium-driver). Prints two lines on stdout,
#
#   GIFTCARD_CHROMIUM=/usr/bin/chromium
#   GIFTCARD_CHROMEDRIVER=/usr/bin/chromedriver
#
# (./scripts/test.sh exports them); progress goes to stderr. Idempotent and
# quiet when both are there. Installs with apt-get (as root, or through
# sudo); anywhere else it stops and says what to install. GIFTCARD_CHROMIUM
# and GIFTCARD_CHROMEDRIVER, when set, are used as they are.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

find_bins() {
  chromium="${GIFTCARD_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
  chromedriver="${GIFTCARD_CHROMEDRIVER:-$(command -v chromedriver || true)}"
  [[ -n "$chromium" && -x "$chromium" && -n "$chromedriver" && -x "$chromedriver" ]]
}

if ! find_bins; then
  [[ -n "${GIFTCARD_CHROMIUM:-}${GIFTCARD_CHROMEDRIVER:-}" ]] &&
    die "GIFTCARD_CHROMIUM='${GIFTCARD_CHROMIUM:-}' / GIFTCARD_CHROMEDRIVER='${GIFTCARD_CHROMEDRIVER:-}' do not name executables: fix them or unset them"
  command -v apt-get >/dev/null 2>&1 ||
    die "chromium and chromedriver are missing and this is not a Debian-like system: install Chromium and a matching chromedriver, then set GIFTCARD_CHROMIUM and GIFTCARD_CHROMEDRIVER"
  sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      die "chromium and chromedriver are missing: run 'apt-get install -y chromium chromium-driver' as root, then re-run"
    sudo=(sudo -n)
  fi
  info "installing chromium, chromium-driver and fonts with apt-get (for the console's browser test; a few minutes)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >&2 ||
    die "apt-get update failed (above): fix the package sources, then run 'apt-get install -y chromium chromium-driver'"
  "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-liberation fonts-dejavu-core >&2 ||
    die "apt-get install chromium chromium-driver failed (above): fix that, then re-run"
  find_bins || die "chromium or chromedriver still missing after apt-get install: look at the output above"
fi

info "browser: $("$chromium" --version 2>/dev/null | head -n 1) ($chromium), driver: $("$chromedriver" --version | cut -d' ' -f1-2) ($chromedriver)"
printf 'GIFTCARD_CHROMIUM=%s\nGIFTCARD_CHROMEDRIVER=%s\n' "$chromium" "$chromedriver"
