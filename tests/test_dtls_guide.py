"""docs/dtls.md works as written: its openssl, twistd, tbcoap and coap-client commands, run as
they stand (only the port, the URL, the admin key and the token put in), certificates and
pre-shared keys."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

from tests.blocking import rest
from tests.conftest import ADMIN_KEY, require_tool

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "dtls.md"
BIN = os.path.dirname(sys.executable)


def commands():
    """Every command of the guide's ``sh`` blocks (continued lines joined)."""
    text = GUIDE.read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                out.append(shlex.split(command))
    return out


def run(command, cwd, **kw):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, **kw)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done


def test_the_guide_as_written(launch, tmp_path):
    client = require_tool("coap-client-openssl", "install Debian's libcoap3-bin (apt-get install libcoap3-bin)")
    steps = commands()
    assert [os.path.basename(c[0]) for c in steps] == ["openssl", "twistd", "coap-client-openssl", "openssl", "tbcoap",
                                     "coap-client-openssl", "coap-client-openssl", "openssl",
                                     "tbcoap", "tbcoap", "coap-client-openssl", "coap-client-openssl"]
    run(steps[0], tmp_path)  # the server certificate
    twistd = steps[1]
    assert twistd == [".venv/bin/twistd", "-n", "tbcoap", "--dtls-cert", "server.pem", "--dtls-key", "server.key"]
    cert, key = str(tmp_path / "server.pem"), str(tmp_path / "server.key")
    node = launch("--dtls-cert", cert, "--dtls-key", key, "--coaps-port", "0", "--coaps-interface", "127.0.0.1")
    port = int(re.findall(r"CoAPS listening on udp \S+:(\d+)", node.read_log())[-1])

    def coaps(command):
        return [client if part == "coap-client-openssl" else
                part.replace("coaps://127.0.0.1/", f"coaps://127.0.0.1:{port}/") for part in command]

    status, device = rest(node.url, "POST", "/api/device?accessToken=MY_TOKEN", {"name": "thermostat-1"})
    assert status == 200
    run(coaps(steps[2]), tmp_path)  # a token over one-way DTLS
    run(steps[3], tmp_path)  # the device certificate
    def tbcoap(command):
        return [os.path.join(BIN, "tbcoap"), "--url", node.url, "--key", ADMIN_KEY, *command[1:]]

    run(tbcoap(steps[4]), tmp_path)
    run(coaps(steps[5]), tmp_path)  # a certificate on a tokenless path
    status, latest = rest(node.url, "GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries")
    assert [point["value"] for point in latest["temperature"]] == ["21.5"]
    observe = coaps(steps[6])
    assert "-s" in observe
    observe[observe.index("-s") + 1] = "1"
    run(observe, tmp_path)
    # the digest command gives the credentialsId the server shows
    digest = subprocess.run(" | ".join(shlex.join(part) for part in _pipeline(steps[7:8])), shell=True,
                            cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()[-1]
    status, credentials = rest(node.url, "GET", f"/api/device/{device['id']['id']}/credentials")
    assert credentials["credentialsType"] == "X509_CERTIFICATE" and credentials["credentialsId"] == digest

    # a pre-shared key: the device, its key, and libcoap's client on paths without a token
    run(tbcoap(steps[8]), tmp_path)
    psk = steps[9]
    key_text = steps[10][steps[10].index("-k") + 1]
    assert psk[psk.index("--key") + 1] == key_text.encode().hex()  # the hex the guide gives is the text's
    assert "636f727265637420686f727365203432" in GUIDE.read_text()
    run(tbcoap(psk), tmp_path)
    meter = rest(node.url, "GET", "/api/tenant/devices?deviceName=meter-7")[1]
    run(coaps(steps[10]), tmp_path)
    status, latest = rest(node.url, "GET", f"/api/plugins/telemetry/DEVICE/{meter['id']['id']}/values/timeseries")
    assert [point["value"] for point in latest["kWh"]] == ["12.5"]
    run(coaps(steps[11]), tmp_path)
    status, attributes = rest(node.url, "GET", f"/api/plugins/telemetry/DEVICE/{meter['id']['id']}"
                                               "/values/attributes/CLIENT_SCOPE")
    assert [(a["key"], a["value"]) for a in attributes] == [("firmware", "v1.4")]
    status, credentials = rest(node.url, "GET", f"/api/device/{meter['id']['id']}/credentials")
    assert credentials == {"deviceId": meter["id"], "credentialsType": "PSK", "credentialsId": "meter-7",
                           "credentialsValue": None}


def _pipeline(steps):
    """The guide's digest command, split at its pipes."""
    (command,) = steps
    parts, current = [], []
    for word in command:
        if word == "|":
            parts.append(current)
            current = []
        else:
            current.append(word)
    return parts + [current]
