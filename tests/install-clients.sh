#!/usr/bin/env bash
# Install the external CoAP clients the tests drive (SPEC section 8), when this machine can:
# libcoap's coap-client (Debian: libcoap3-bin) and npm's coap-cli. Tests that need a missing
# one skip with a message, or fail when TBCOAP_REQUIRE_ALL=1 (as in CI).
set -u
if ! command -v coap-client-notls >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq libcoap3-bin) >/dev/null 2>&1 \
            || echo "install-clients: could not install libcoap3-bin" >&2
    else
        echo "install-clients: coap-client-notls missing (apt-get install libcoap3-bin as root)" >&2
    fi
fi
if ! command -v coap >/dev/null 2>&1; then
    if command -v npm >/dev/null 2>&1; then
        npm install -g --silent coap-cli >/dev/null 2>&1 || echo "install-clients: npm install -g coap-cli failed" >&2
    else
        echo "install-clients: npm missing, cannot install coap-cli" >&2
    fi
fi
exit 0
