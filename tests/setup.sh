#!/usr/bin/env bash
# Installs what the tests need beyond pip's '.[test]', idempotently: the
# browser test's Chromium and playwright-core (tests/browser/setup.sh), and
# the Debian tools the tests run: socat, the plain-to-TLS bridge that lets the
# Autobahn testsuite (whose client has no TLS) reach a wss:// listener;
# redis-server, which the bus tests start on free loopback ports; ss
# (iproute2), which shows a listener's queue; nginx and its Lua module, the
# peer bench/ compares against (its smoke run is a test).
# Installing needs root:
#   bash tests/setup.sh
set -euo pipefail
cd "$(dirname "$0")"

bash browser/setup.sh

packages=()
command -v socat >/dev/null 2>&1 || packages+=(socat)
command -v ss >/dev/null 2>&1 || packages+=(iproute2)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v nginx >/dev/null 2>&1 || packages+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || packages+=(libnginx-mod-http-lua)
if [ ${#packages[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${packages[@]}"
fi
