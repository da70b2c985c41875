#!/usr/bin/env bash
# Installs what tests/test_browser.py needs, idempotently: Debian's Chromium
# (/usr/bin/chromium) and playwright-core from package-lock.json. Run as root:
#   bash tests/browser/setup.sh
set -euo pipefail
cd "$(dirname "$0")"

packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
if [ ${#packages[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${packages[@]}"
fi

if [ ! -d node_modules ]; then
    npm ci --no-audit --no-fund
fi
