#!/usr/bin/env bash
# Install what the browser SDK needs to build and test: its node packages (npm ci, from
# package-lock.json) and Debian's chromium and ffmpeg for the end-to-end tests. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
. ../scripts/node-packages.sh
need_node sdk_js
apt_install chromium ffmpeg
npm_ci
