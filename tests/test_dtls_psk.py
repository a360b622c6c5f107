"""CoAPS with pre-shared keys against a ``twistd -n tbcoap``: the credential through REST and the
CLI (the key never read back), libcoap's clients on tokenless paths, CCM_8, a wrong key and an
unknown identity refused and counted, and a replaced key that no longer speaks for the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.blocking import Coap
from tests.conftest import ADMIN_KEY, require_tool
from tests.dtlsclient import DtlsCoap
from tests.test_dtls import CONTENT, CREATED, GET, POST, UNAUTHORIZED, DtlsServer

HOW = "install Debian's libcoap3-bin (apt-get install libcoap3-bin)"
KEY_TEXT = "correct horse 42"  # libcoap's -k takes the key as text: the server gets its bytes in hex
KEY_HEX = KEY_TEXT.encode().hex()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    node = DtlsServer(tmp_path_factory.mktemp("psk"))
    yield node
    node.stop()


def psk_device(server, identity=None, key=KEY_HEX):
    """A new device whose credential is a pre-shared key: ``(device, identity)``."""
    device, _ = server.device()
    identity = identity or f"psk-{uuid.uuid4().hex[:8]}"
    status, body = server.rest("POST", "/api/device/credentials", {
        "deviceId": device["id"], "credentialsType": "PSK", "credentialsId": identity, "credentialsValue": key})
    assert status == 200, body
    return device, identity


def libcoap(client, identity, key_text, *args):
    binary = require_tool(client, HOW)
    return subprocess.run([binary, "-u", identity, "-k", key_text, "-B", "5", *args],
                          capture_output=True, text=True, timeout=30)


def test_psk_credentials_over_rest(server):
    device, token = server.device()
    body = {"deviceId": device["id"], "credentialsType": "PSK", "credentialsId": "meter-1",
            "credentialsValue": KEY_HEX.upper()}
    status, answer = server.rest("POST", "/api/device/credentials", body)
    assert status == 200
    assert answer == {"deviceId": {"entityType": "DEVICE", "id": device["id"]["id"]}, "credentialsType": "PSK",
                      "credentialsId": "meter-1", "credentialsValue": None}
    status, read = server.rest("GET", f"/api/device/{device['id']['id']}/credentials")
    assert read == answer and KEY_HEX not in json.dumps(read).lower()
    plain = Coap(("127.0.0.1", server.process.coap_port))
    try:  # the token is gone, and the identity is no token
        assert plain.request(POST, f"/api/v1/{token}/telemetry", b'{"t":1}') == UNAUTHORIZED
        assert plain.request(POST, "/api/v1/meter-1/telemetry", b'{"t":1}') == UNAUTHORIZED
    finally:
        plain.close()
    for identity, key in (("", KEY_HEX), ("a\x00b", KEY_HEX), ("x" * 129, KEY_HEX), (None, KEY_HEX), ("k", "00" * 15),
                          ("k", "00" * 65), ("k", "zz" * 16), ("k", KEY_HEX + "0"), ("k", None), ("k", 1234)):
        status, error = server.rest("POST", "/api/device/credentials",
                                    {**body, "credentialsId": identity, "credentialsValue": key})
        assert status == 400 and error["message"], (identity, key)
    other, other_token = server.device()
    status, error = server.rest("POST", "/api/device/credentials", {**body, "deviceId": other["id"]})
    assert status == 400  # one identity, one device
    status, error = server.rest("POST", "/api/device/credentials", {**body, "credentialsId": other_token})
    assert status == 400  # ids are unique across tokens, certificates and identities


@pytest.mark.parametrize("client", ["coap-client-openssl", "coap-client-gnutls"])
def test_libcoap_psk_device_on_tokenless_paths(server, client):
    device, identity = psk_device(server)
    base = f"coaps://127.0.0.1:{server.coaps[1]}/api/v1"
    done = libcoap(client, identity, KEY_TEXT, "-m", "post", "-e", '{"temperature":21.5}', f"{base}/telemetry")
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert server.latest(device) == {"temperature": 21.5}
    done = libcoap(client, identity, KEY_TEXT, "-m", "post", "-e", '{"fw":"v1.2"}', f"{base}/attributes")
    assert done.returncode == 0 and not done.stderr, done.stderr
    server.rest("POST", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE", {"mode": "eco"})
    done = libcoap(client, identity, KEY_TEXT, "-m", "get", f"{base}/attributes?clientKeys=fw&sharedKeys=mode")
    assert done.returncode == 0 and json.loads(done.stdout) == {"client": {"fw": "v1.2"}, "shared": {"mode": "eco"}}


@pytest.mark.parametrize("identity, key_text, reason", [("known", "wrong horse 42!", "wrongKey"),
                                                        ("nobody-has-this", KEY_TEXT, "unknownIdentity")])
def test_a_wrong_key_or_unknown_identity_is_refused_and_counted(server, identity, key_text, reason):
    device, known = psk_device(server)
    identity = known if identity == "known" else identity
    before = server.dtls_stats()
    done = libcoap("coap-client-openssl", identity, key_text, "-m", "post", "-e", '{"x":1}',
                   f"coaps://127.0.0.1:{server.coaps[1]}/api/v1/telemetry")
    told = {"wrongKey": "alert decrypt error", "unknownIdentity": "alert unknown psk identity"}[reason]
    assert told in done.stdout + done.stderr  # libcoap logs on stdout
    after = server.dtls_stats()
    assert after[f"pskFailures.{reason}"] == before[f"pskFailures.{reason}"] + 1
    assert after["failedHandshakes"] == before["failedHandshakes"] + 1
    assert server.latest(device) == {}


def test_a_client_offering_only_ccm8(server):
    """TLS_PSK_WITH_AES_128_CCM_8, RFC 7252's mandatory suite, alone."""
    device, identity = psk_device(server)
    client = DtlsCoap(server.coaps, psk=(identity.encode(), KEY_TEXT.encode()), ciphers="PSK-AES128-CCM8:@SECLEVEL=0")
    try:
        assert client.sock.conn.get_cipher_name() == "PSK-AES128-CCM8"
        assert client.request(POST, "/api/v1/telemetry", b'{"ccm8":true}') == CREATED
        code, body = client.exchange(POST, "/api/v1/rpc", b'{"method":"echo"}')
        assert code == CONTENT and json.loads(body) == {"method": "echo"}
    finally:
        client.close()
    assert server.latest(device) == {"ccm8": True}


def test_a_replaced_key_no_longer_speaks_for_the_device(server):
    device, identity = psk_device(server)
    old = DtlsCoap(server.coaps, psk=(identity.encode(), KEY_TEXT.encode()))
    new_key = os.urandom(16)
    try:
        assert old.request(POST, "/api/v1/telemetry", b'{"k":1}') == CREATED
        status, _ = server.rest("POST", "/api/device/credentials", {
            "deviceId": device["id"], "credentialsType": "PSK", "credentialsId": identity,
            "credentialsValue": new_key.hex()})
        assert status == 200
        assert old.request(POST, "/api/v1/telemetry", b'{"k":2}') == UNAUTHORIZED  # made with the old key
        assert old.request(GET, "/api/v1/attributes") == UNAUTHORIZED
    finally:
        old.close()
    new = DtlsCoap(server.coaps, psk=(identity.encode(), new_key))
    try:
        assert new.request(POST, "/api/v1/telemetry", b'{"k":3}') == CREATED
    finally:
        new.close()
    assert server.latest(device) == {"k": 3}


def test_the_cli_gives_a_device_a_psk(server):
    device, _ = server.device()
    tbcoap = os.path.join(os.path.dirname(sys.executable), "tbcoap")
    common = [tbcoap, "--url", server.url, "--key", ADMIN_KEY]
    done = subprocess.run([*common, "device", "psk", device["name"], "--identity", "cli-meter", "--key", KEY_HEX],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "identity cli-meter" in done.stdout, done.stderr
    done = subprocess.run([*common, "device", "token", device["name"]], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "pre-shared key" in done.stderr and KEY_HEX not in done.stderr + done.stdout
    done = subprocess.run([*common, "device", "psk", device["name"], "--identity", "cli-meter", "--key", "abc"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "hex" in done.stderr
    status, read = server.rest("GET", f"/api/device/{device['id']['id']}/credentials")
    assert (read["credentialsType"], read["credentialsId"], read["credentialsValue"]) == ("PSK", "cli-meter", None)
