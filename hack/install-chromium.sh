#!/usr/bin/env bash
# Installs headless Chromium for the web console's browser test
# (node/console/browser_test.go): Debian's `chromium` package, with apt-get,
# only when /usr/bin/chromium is missing. Idempotent: a machine that has it
# returns at once. Needs root (CI and the dev machines run as root) or sudo.
#
#   hack/install-chromium.sh && CONSOLE_E2E_REQUIRED=1 make test
set -euo pipefail

log() { printf 'install-chromium: %s\n' "$*" >&2; }

chromium=/usr/bin/chromium

if [ -x "$chromium" ]; then
  log "$("$chromium" --version 2>/dev/null || echo "$chromium") is installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "no $chromium and no apt-get: install Chromium by hand, or point \$CHROMIUM at one"
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    log "not root and no sudo: cannot install chromium"
    exit 1
  fi
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
log "installing Debian's chromium (apt-get update first)"
# Retry: a mirror hiccup must not fail CI on its own.
for attempt in 1 2 3; do
  if "${sudo[@]}" apt-get update -q >&2 &&
     "${sudo[@]}" apt-get install -y -q chromium >&2; then
    break
  fi
  if [ "$attempt" = 3 ]; then
    log "apt-get failed three times"
    exit 1
  fi
  log "apt-get failed (attempt $attempt); retrying in 10 s"
  sleep 10
done

if [ ! -x "$chromium" ]; then
  log "apt-get installed chromium but $chromium is not there"
  exit 1
fi
log "installed $("$chromium" --version 2>/dev/null || echo "$chromium")"
