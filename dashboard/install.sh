#!/usr/bin/env bash
# Install what the dashboard needs to build and test: its node packages (npm ci, from package-lock.json), and for
# the end-to-end tests Debian's chromium (driven by playwright-core; a browser download cannot work here) and
# fonts-noto-cjk, so the screenshots show the Chinese labels rather than empty boxes. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null && command -v npm >/dev/null || { echo "dashboard needs Node.js 20+ and npm" >&2; exit 1; }
node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' ||
  { echo "dashboard needs Node.js 20+" >&2; exit 1; }
missing=()
command -v chromium >/dev/null || missing+=(chromium)
dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q 'install ok installed' || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# npm ci only when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
