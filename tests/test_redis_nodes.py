"""Two nodes on one Redis, or on one PostgreSQL database, behave, from devices' and REST's point
of view, like one node.

Each test starts two in-process nodes (their own ports and data directories) on the shared test
Redis under a prefix of its own, then on a PostgreSQL database of its own (the ``shared_store``
fixture), and crosses them: telemetry, attribute notifications, device deletion, token rotation,
two-way and queued RPC.
"""

import json

import pytest_twisted
from twisted.internet import defer, reactor, task
from txthings import coap as tx

from tests.coapclient import ACK, CON, GET, POST, code_text, open_client
from tests.conftest import Rest


@pytest_twisted.async_fixture
async def two_nodes(start_node, shared_store):
    a = await start_node("--store", shared_store)
    b = await start_node("--store", shared_store)
    device, _ = await a.core.devices.create("shared-device", token="TOKEN-1")
    return a, b, device


def rest_of(node):
    return Rest(f"http://127.0.0.1:{node.http_address[1]}")


async def client_of(node):
    return await open_client(("127.0.0.1", node.coap_address[1]))


def ack(client, message):
    client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())


async def next_for(client, token, timeout=5.0):
    while True:
        message = await client.receive(timeout)
        if message.token == token:
            if message.mtype == CON:
                ack(client, message)
            return message


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_telemetry_posted_to_one_node_is_read_from_the_other(two_nodes):
    a, b, device = two_nodes
    client = await client_of(a)
    answer = await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"temperature":21.5,"on":true}')
    assert code_text(answer.code) == "2.01"
    status, latest = await rest_of(b).get(f"/api/plugins/telemetry/DEVICE/{device.id}/values/timeseries"
                                          "?useStrictDataTypes=true")
    assert status == 200 and {k: v[0]["value"] for k, v in latest.items()} == {"temperature": 21.5, "on": True}
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_shared_attribute_set_on_one_node_reaches_a_device_observing_the_other(two_nodes):
    a, b, device = two_nodes
    client = await client_of(b)
    first = await client.request(GET, "/api/v1/TOKEN-1/attributes", observe=0, token=b"obs")
    assert json.loads(first.payload) == {}
    status, _ = await rest_of(a).post(f"/api/plugins/telemetry/DEVICE/{device.id}/SHARED_SCOPE", {"target": 20.5})
    assert status == 200
    change = await next_for(client, b"obs")
    assert change.opt.observe == 1 and json.loads(change.payload) == {"target": 20.5}
    await rest_of(a).delete(f"/api/plugins/telemetry/DEVICE/{device.id}/SHARED_SCOPE?keys=target")
    deleted = await next_for(client, b"obs")
    assert json.loads(deleted.payload) == {"deleted": ["target"]}
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_token_rotated_on_one_node_is_refused_at_once_by_the_other(two_nodes):
    a, b, device = two_nodes
    client = await client_of(b)
    assert code_text((await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"n":1}')).code) == "2.01"
    await client.request(GET, "/api/v1/TOKEN-1/attributes", observe=0, token=b"obs")  # b caches the token
    status, _ = await rest_of(a).post("/api/device/credentials", {"deviceId": {"id": device.id},
                                                                   "credentialsType": "ACCESS_TOKEN",
                                                                   "credentialsId": "TOKEN-2"})
    assert status == 200
    ended = await next_for(client, b"obs")
    assert code_text(ended.code) == "4.01"
    assert code_text((await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"n":2}')).code) == "4.01"
    assert code_text((await client.request(POST, "/api/v1/TOKEN-2/telemetry", b'{"n":3}')).code) == "2.01"
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_device_deleted_on_one_node_is_gone_on_the_other(two_nodes):
    a, b, device = two_nodes
    client = await client_of(b)
    await client.request(GET, "/api/v1/TOKEN-1/rpc", observe=0, token=b"rpc")
    assert b.observers.stats()["rpcObservations"] == 1
    status, _ = await rest_of(a).delete(f"/api/device/{device.id}")
    assert status == 200
    ended = await next_for(client, b"rpc")
    assert code_text(ended.code) == "4.04"
    assert code_text((await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"n":1}')).code) == "4.01"
    assert b.observers.stats()["rpcObservations"] == 0
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_two_way_rpc_called_on_one_node_is_answered_through_the_other(two_nodes):
    a, b, device = two_nodes
    client = await client_of(b)
    await client.request(GET, "/api/v1/TOKEN-1/rpc", observe=0, token=b"rpc")
    call = defer.ensureDeferred(rest_of(a).post(f"/api/rpc/twoway/{device.id}",
                                               {"method": "getTemperature", "params": {"unit": "C"}}))
    request = await next_for(client, b"rpc")
    body = json.loads(request.payload)
    assert body["method"] == "getTemperature" and body["params"] == {"unit": "C"}
    reply = await client.request(POST, f"/api/v1/TOKEN-1/rpc/{body['id']}", b'{"temperature":21.5}')
    assert code_text(reply.code) == "2.01"
    status, answer = await call
    assert (status, answer) == (200, {"temperature": 21.5})
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_queued_rpc_goes_out_through_the_node_the_device_registers_with(two_nodes):
    a, b, device = two_nodes
    status, made = await rest_of(a).post(f"/api/rpc/oneway/{device.id}",
                                         {"method": "reboot", "persistent": True, "timeout": 60000})
    assert status == 200
    client = await client_of(b)
    await client.request(GET, "/api/v1/TOKEN-1/rpc", observe=0, token=b"rpc")
    request = await next_for(client, b"rpc")
    assert json.loads(request.payload)["method"] == "reboot"
    for _ in range(50):
        status, rpc = await rest_of(a).get(f"/api/rpc/persistent/{made['rpcId']}")
        if rpc["status"] == "SUCCESSFUL":
            break
        await sleep(0.05)
    assert rpc["status"] == "SUCCESSFUL"
    await client.port.stopListening()
