#!/usr/bin/env bash
# Install the external clients the tests drive, when this machine can:
#  - npm's coap-cli, into .clients/ in the project (never globally);
#  - Debian's libcoap3-bin (coap-client-notls, -openssl, -gnutls), system-wide with apt-get: said before it is done;
#  - Debian's chromium and chromium-driver (the web console's browser tests), the same way.
# A test that needs a missing client skips with a message saying how to get it, or fails when
# TBCOAP_REQUIRE_ALL=1 (as in CI).
set -u
cd "$(dirname "$0")/.."
say() { echo "install-clients: $*" >&2; }

if [ -x .clients/node_modules/.bin/coap ]; then
    :
elif command -v npm >/dev/null 2>&1; then
    say "installing npm's coap-cli into $(pwd)/.clients (project-local)"
    npm install --silent --no-audit --no-fund --prefix .clients coap-cli >/dev/null 2>&1 \
        || say "npm install coap-cli failed; the npm client tests will not run"
else
    say "npm is missing: cannot install coap-cli (the npm client tests will not run)"
fi

if ! command -v coap-client-notls >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing Debian's libcoap3-bin SYSTEM-WIDE with apt-get (coap-client-notls, -openssl, -gnutls)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcoap3-bin) >/dev/null 2>&1 \
            || say "apt-get could not install libcoap3-bin"
    else
        say "coap-client-notls is missing: as root, apt-get install libcoap3-bin"
    fi
fi
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing Debian's chromium and chromium-driver SYSTEM-WIDE with apt-get (the console's browser tests)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
            >/dev/null 2>&1 || say "apt-get could not install chromium and chromium-driver"
    else
        say "chromium or chromedriver is missing: as root, apt-get install chromium chromium-driver"
    fi
fi
exit 0
