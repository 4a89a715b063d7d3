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
# openssl makes the self-signed certificate of the SDK's TLS test.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
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

# Another apt (a second checkout's setup, an unattended upgrade) may hold apt's locks:
# wait for it instead of failing (`apt-get update` does not wait on its lists lock).
apt_get() {
  local attempt output
  for attempt in $(seq 1 120); do
    if output=$(apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1); then
      [ -z "$output" ] || printf '%s\n' "$output"
      return 0
    fi
    case $output in
      *"Could not get lock"*) echo "apt is busy (attempt $attempt): waiting for its lock" >&2; sleep 5 ;;
      *) printf '%s\n' "$output" >&2; return 1 ;;
    esac
  done
  printf '%s\n' "$output" >&2
  return 1
}
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${missing[@]}"
