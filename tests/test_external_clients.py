"""The clients ThingsBoard users have work unchanged (libcoap, npm coap-cli, aiocoap)."""

import json
import os
import shutil
import sys

import pytest_twisted
from twisted.internet import utils

from tests.conftest import require, require_tool


async def run(*command):
    out, err, code = await utils.getProcessOutputAndValue(command[0], command[1:], env=os.environ)
    return out.decode(), err.decode(), code


def libcoap():
    return require_tool("coap-client-notls", "install Debian's libcoap3-bin (apt-get install libcoap3-bin)")


def coap_cli():
    return require_tool("coap", "run bash tests/install-clients.sh (npm install --prefix .clients coap-cli)")


def aiocoap_client():
    path = shutil.which("aiocoap-client") or os.path.join(os.path.dirname(sys.executable), "aiocoap-client")
    require(os.path.exists(path), "aiocoap-client is not installed", "pip install aiocoap")
    return path


async def latest_values(rest, device):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                  "?useStrictDataTypes=true")
    assert status == 200
    return {key: points[0]["value"] for key, points in body.items()}


def url(node, path):
    return f"coap://127.0.0.1:{node.coap_address[1]}{path}"


@pytest_twisted.ensureDeferred
async def test_libcoap_client(node, rest, device):
    client = libcoap()
    out, err, code = await run(client, "-m", "post", "-e", '{"temperature":21.5,"humidity":"40"}',
                               url(node, "/api/v1/TOKEN-1/telemetry"))
    assert code == 0, err
    assert await latest_values(rest, device) == {"temperature": 21.5, "humidity": 40}
    out, err, code = await run(client, "-m", "post", "-e", '{"fw":"a1"}', url(node, "/api/v1/TOKEN-1/attributes"))
    assert code == 0, err
    out, err, code = await run(client, "-m", "get", url(node, "/api/v1/TOKEN-1/attributes?clientKeys=fw"))
    assert code == 0 and json.loads(out) == {"client": {"fw": "a1"}}
    out, err, code = await run(client, "-m", "post", "-e", '{"a":1}', url(node, "/api/v1/WRONG/telemetry"))
    assert "4.01" in out + err and "unknown access token" in out + err


@pytest_twisted.ensureDeferred
async def test_npm_coap_cli(node, rest, device):
    client = coap_cli()
    out, err, code = await run(client, "post", "-p", '{"speed":3}', url(node, "/api/v1/TOKEN-1/telemetry"))
    assert code == 0 and "2.01" in out + err, out + err
    assert await latest_values(rest, device) == {"speed": 3}
    out, err, code = await run(client, "post", "-c", "-p", '{"speed":4}', url(node, "/api/v1/TOKEN-1/telemetry"))
    assert code == 0 and "2.01" in out + err, out + err
    assert await latest_values(rest, device) == {"speed": 4}


@pytest_twisted.ensureDeferred
async def test_aiocoap_client(node, rest, device):
    client = aiocoap_client()
    out, err, code = await run(client, "-m", "POST", "--payload", '{"v":true}', url(node, "/api/v1/TOKEN-1/telemetry"))
    assert code == 0, err
    assert await latest_values(rest, device) == {"v": True}
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE",
                                {"big": "q" * 3000})
    assert status == 200
    out, err, code = await run(client, url(node, "/api/v1/TOKEN-1/attributes?sharedKeys=big"))
    assert code == 0 and json.loads(out) == {"shared": {"big": "q" * 3000}}  # fetched block-wise


@pytest_twisted.ensureDeferred
async def test_libcoap_observes_shared_attributes(node, rest, device):
    from twisted.internet import defer, reactor, task

    client = libcoap()
    device_id = device["id"]["id"]
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"mode": "eco"})
    watching = defer.ensureDeferred(run(client, "-s", "3", "-m", "get", url(node, "/api/v1/TOKEN-1/attributes")))
    await task.deferLater(reactor, 1.0, lambda: None)
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"target": 21})
    out, err, code = await watching
    assert code == 0, err
    assert '{"mode":"eco"}' in out and '{"target":21}' in out
    assert out.index('{"mode":"eco"}') < out.index('{"target":21}')


@pytest_twisted.ensureDeferred
async def test_npm_coap_cli_observes_rpc(node, rest, device):
    from twisted.internet import defer, reactor, task

    client = coap_cli()
    watching = defer.ensureDeferred(run(shutil.which("timeout"), "4", client, "-o", "get",
                                        url(node, "/api/v1/TOKEN-1/rpc")))
    await task.deferLater(reactor, 1.5, lambda: None)
    status, _ = await rest.post(f"/api/rpc/oneway/{device['id']['id']}", {"method": "setGpio", "params": {"pin": 2}})
    assert status == 200  # delivered: the client acknowledged the CON notification
    out, err, code = await watching
    assert "{}" in out and '{"id":1,"method":"setGpio","params":{"pin":2}}' in out
