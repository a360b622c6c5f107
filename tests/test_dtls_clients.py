"""libcoap's DTLS clients (``coap-client-openssl``, ``coap-client-gnutls``) against CoAPS: a device
with a token over one-way DTLS, and a device whose only credential is its certificate, each post
telemetry, observe shared attributes and answer a two-way RPC."""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, utils

from tests.certs import make_ca, make_cert
from tests.conftest import Rest, require_tool

HOW = "install Debian's libcoap3-bin (apt-get install libcoap3-bin)"


async def run(*command):
    out, err, code = await utils.getProcessOutputAndValue(command[0], command[1:], env=os.environ)
    return out.decode(), err.decode(), code


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def pki(tmp_path):
    ca = make_ca()
    server = make_cert(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    return server, str(tmp_path / "ca.pem"), make_cert(None, "device-1", client=True)


@pytest_twisted.async_fixture
async def dtls_node(start_node, pki):
    (cert, key), _, _ = pki
    return await start_node("--dtls-cert", cert, "--dtls-key", key, "--coaps-port", "0",
                            "--coaps-interface", "127.0.0.1")


@pytest.mark.parametrize("credential", ["token", "certificate"])
@pytest.mark.parametrize("client", ["coap-client-openssl", "coap-client-gnutls"])
@pytest_twisted.ensureDeferred
async def test_libcoap_dtls_device(dtls_node, pki, tmp_path, client, credential):
    binary = require_tool(client, HOW)
    rest = Rest(f"http://127.0.0.1:{dtls_node.http_address[1]}")
    _, ca_file, device_cert = pki
    status, device = await rest.post("/api/device?accessToken=DTLS-TOKEN-1", {"name": "secure-1"})
    assert status == 200
    device_id = device["id"]["id"]
    if credential == "certificate":
        status, body = await rest.post("/api/device/credentials", {
            "deviceId": device["id"], "credentialsType": "X509_CERTIFICATE",
            "credentialsValue": device_cert.cert_pem.decode()})
        assert status == 200, body
        cert, key = device_cert.write(tmp_path, "device")
        options, prefix = ["-C", ca_file, "-c", cert, "-j", key], "/api/v1"  # the certificate is the device
    else:
        options, prefix = ["-C", ca_file], "/api/v1/DTLS-TOKEN-1"  # one-way DTLS: the server's certificate
    base = f"coaps://127.0.0.1:{dtls_node.coaps_address[1]}{prefix}"

    out, err, code = await run(binary, *options, "-m", "post", "-e", '{"temperature":21.5}', f"{base}/telemetry")
    assert code == 0 and not err, err
    status, latest = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"
                                    "?useStrictDataTypes=true")
    assert latest["temperature"][0]["value"] == 21.5

    # shared attributes: the whole set first, then each change
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"mode": "eco"})
    watching = defer.ensureDeferred(run(binary, *options, "-s", "3", "-m", "get", f"{base}/attributes"))
    await sleep(1.2)
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"target": 21})
    out, err, code = await watching
    assert code == 0, err
    assert '{"mode":"eco"}' in out and '{"target":21}' in out
    assert out.index('{"mode":"eco"}') < out.index('{"target":21}')

    # a two-way RPC: the device observes /rpc, gets the request and answers it
    observing = defer.ensureDeferred(run(binary, *options, "-s", "4", "-m", "get", f"{base}/rpc"))
    await sleep(1.2)
    calling = defer.ensureDeferred(rest.post(f"/api/rpc/twoway/{device_id}",
                                             {"method": "getState", "params": {"led": 1}, "timeout": 8000}))
    await sleep(0.8)
    out, err, code = await run(binary, *options, "-m", "post", "-e", '{"led":1,"on":true}', f"{base}/rpc/1")
    assert code == 0 and not err, err
    status, answer = await calling
    assert (status, answer) == (200, {"led": 1, "on": True})
    out, err, code = await observing
    assert json.dumps({"id": 1, "method": "getState", "params": {"led": 1}}, separators=(",", ":")) in out
