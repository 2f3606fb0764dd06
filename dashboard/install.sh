#!/usr/bin/env bash
# Install what the dashboard needs to build and test: its node packages (npm ci, from package-lock.json), and for
# the end-to-end tests Debian's chromium (driven by playwright-core; a browser download cannot work here) and
# fonts-noto-cjk, so the screenshots show the Chinese labels rather than empty boxes. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
. ../scripts/node-packages.sh
need_node dashboard
apt_install chromium fonts-noto-cjk
npm_ci
