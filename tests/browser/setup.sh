#!/usr/bin/env bash
# Installs what tests/test_browser.py needs, idempotently: Debian's Chromium
# (/usr/bin/chromium) and playwright-core from package-lock.json. Run as root:
#   bash tests/browser/setup.sh
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y chromium
fi

if [ ! -d node_modules ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "tests/browser/setup.sh: npm (Node.js) is not installed" >&2
        exit 1
    fi
    npm ci --no-audit --no-fund
fi
