#!/usr/bin/env bash
# Install what the browser SDK needs to build and test: its node packages (npm ci, from
# package-lock.json) and Debian's chromium and ffmpeg for the end-to-end tests. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null && command -v npm >/dev/null || { echo "sdk_js needs Node.js 20+ and npm" >&2; exit 1; }
node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' || { echo "sdk_js needs Node.js 20+" >&2; exit 1; }
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
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
