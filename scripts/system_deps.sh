#!/usr/bin/env bash
# Install the Debian packages the test suite runs for real, only those missing:
# redis-server, a PostgreSQL cluster, promtool, chromium (the tests start throwaway instances
# when none listens on the usual ports). Needs root; otherwise says what to install.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# promtool (from Debian's prometheus package) checks /metrics and unit-tests the alert rules.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Chromium (Debian's package, driven by Playwright) runs the web page's browser tests.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# ss (iproute2) reads a listening socket's accept-queue size in the gateway's tests.
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
# A TrueType font with Hangul glyphs (NanumGothicCoding, monospaced) for PDF exports of Korean scripts.
[ -f /usr/share/fonts/truetype/nanum/NanumGothicCoding.ttf ] || missing+=(fonts-nanum)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
