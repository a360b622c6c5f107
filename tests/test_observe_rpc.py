"""Observe and server-side RPC over real UDP: shared-attribute observation, server-side RPC."""

import json

import pytest_twisted
from twisted.internet import defer, reactor, task
from txthings import coap as tx

from tbcoap.models import now_ms
from tests.coapclient import ACK, CON, GET, NON, POST, RST, code_text, open_client

ATTRIBUTES = "/api/v1/TOKEN-1/attributes"
RPC = "/api/v1/TOKEN-1/rpc"


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


async def notification(client, token, ack=True, timeout=3.0):
    """The next message with ``token``; a CON one is acknowledged unless ``ack`` is False."""
    while True:
        message = await client.receive(timeout)
        if message.token == token:
            if message.mtype == CON and ack:
                client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
            return message


def body(message):
    assert message.opt.content_format == 50
    return json.loads(message.payload)


async def set_shared(rest, device, values):
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE", values)
    assert status == 200


# -- shared attributes ------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_attribute_observation(node, coap, rest, device):
    await set_shared(rest, device, {"a": 1, "b": "x"})
    first = await coap.request(GET, ATTRIBUTES, observe=0, token=b"obs1")
    assert code_text(first.code) == "2.05" and first.opt.observe == 0
    assert body(first) == {"a": 1, "b": "x"}
    await set_shared(rest, device, {"b": "y", "c": 2.5})
    change = await notification(coap, b"obs1")
    assert change.mtype == CON and change.opt.observe == 1 and body(change) == {"b": "y", "c": 2.5}
    status, _ = await rest.delete(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE?keys=a,zz")
    deleted = await notification(coap, b"obs1")
    assert deleted.opt.observe == 2 and body(deleted) == {"deleted": ["a"]}
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SERVER_SCOPE", {"s": 1})
    assert await coap.silence(0.3)  # server-scope changes are not notified


@pytest_twisted.ensureDeferred
async def test_empty_shared_set_and_several_observers(node, coap, rest, device):
    other = await open_client(("127.0.0.1", node.coap_address[1]))
    first = await coap.request(GET, ATTRIBUTES, observe=0, token=b"one")
    assert body(first) == {}
    second = await other.request(GET, ATTRIBUTES, observe=0, token=b"two")
    third = await coap.request(GET, ATTRIBUTES, observe=0, token=b"three")  # a new token adds
    assert second.opt.observe == third.opt.observe == 0
    assert node.coap.stats()["observations"] == 3
    await set_shared(rest, device, {"k": True})
    got = {(await notification(coap, t)).token for t in (b"one", b"three")}
    assert got == {b"one", b"three"}
    assert body(await notification(other, b"two")) == {"k": True}
    await other.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_non_registration_gets_non_notifications(node, coap, rest, device):
    first = await coap.request(GET, ATTRIBUTES, observe=0, token=b"non", mtype=NON)
    assert first.mtype == NON and first.opt.observe == 0
    await set_shared(rest, device, {"n": 1})
    change = await notification(coap, b"non")
    assert change.mtype == NON and change.opt.observe == 1


@pytest_twisted.ensureDeferred
async def test_deregistration_is_answered_normally(node, coap, rest, device):
    await set_shared(rest, device, {"a": 1})
    await coap.request(GET, ATTRIBUTES, observe=0, token=b"d")
    again = await coap.request(GET, ATTRIBUTES, observe=1, token=b"d")
    assert code_text(again.code) == "2.05" and again.opt.observe is None
    assert body(again) == {"shared": {"a": 1}}
    assert node.coap.stats()["observations"] == 0
    await set_shared(rest, device, {"a": 2})
    assert await coap.silence(0.3)


@pytest_twisted.ensureDeferred
async def test_reregistration_with_the_same_token_replaces(node, coap, rest, device):
    await coap.request(GET, ATTRIBUTES, observe=0, token=b"same")
    await set_shared(rest, device, {"a": 1})
    assert (await notification(coap, b"same")).opt.observe == 1
    again = await coap.request(GET, ATTRIBUTES, observe=0, token=b"same")
    assert again.opt.observe == 0 and node.coap.stats()["observations"] == 1
    await set_shared(rest, device, {"a": 2})
    assert (await notification(coap, b"same")).opt.observe == 1
    assert await coap.silence(0.2)  # one relation, one notification


@pytest_twisted.ensureDeferred
async def test_rst_to_a_notification_cancels_that_observation(node, coap, rest, device):
    await coap.request(GET, ATTRIBUTES, observe=0, token=b"r")
    await coap.request(GET, ATTRIBUTES, observe=0, token=b"keep")
    await set_shared(rest, device, {"a": 1})
    for _ in range(2):
        message = await coap.receive()
        if message.token == b"r":
            coap.send_raw(tx.Message(mtype=RST, mid=message.mid, code=tx.EMPTY).encode())
        else:
            coap.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
    await sleep(0.1)
    assert node.coap.stats()["observations"] == 1
    await set_shared(rest, device, {"a": 2})
    assert (await notification(coap, b"keep")).opt.observe == 2
    assert await coap.silence(0.2)


@pytest_twisted.ensureDeferred
async def test_unacknowledged_con_notification_cancels_only_that_observation(start_node, rest):
    fast = await start_node("--ack-timeout", "0.1", "--max-retransmit", "1")
    await fast.core.devices.create("d", token="TOKEN-1")
    device = await fast.core.devices.by_name("d")
    client = await open_client(("127.0.0.1", fast.coap_address[1]))
    await client.request(GET, ATTRIBUTES, observe=0, token=b"lost")
    await client.request(GET, ATTRIBUTES, observe=0, token=b"ok")
    await fast.core.attributes.save(device.id, "SHARED_SCOPE", b'{"a":1}')
    seen = []
    while len(seen) < 3:  # "ok" acknowledged once; "lost" sent twice and never acknowledged
        message = await client.receive()
        seen.append(message.token)
        if message.token == b"ok":
            client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
    assert sorted(seen) == [b"lost", b"lost", b"ok"]
    await sleep(0.5)
    assert list(fast.coap.observations) == [("127.0.0.1", client.port.getHost().port, b"ok")]
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_deleted_device_and_replaced_token_end_observations(node, coap, rest, device):
    await coap.request(GET, ATTRIBUTES, observe=0, token=b"t")
    await rest.post("/api/device/credentials", {"deviceId": {"id": device["id"]["id"]},
                                                "credentialsType": "ACCESS_TOKEN", "credentialsId": "TOKEN-2"})
    ended = await notification(coap, b"t")
    assert code_text(ended.code) == "4.01" and ended.opt.observe is None
    await coap.request(GET, "/api/v1/TOKEN-2/attributes", observe=0, token=b"u")
    await rest.delete(f"/api/device/{device['id']['id']}")
    ended = await notification(coap, b"u")
    assert code_text(ended.code) == "4.04"
    await sleep(0.05)
    assert node.coap.stats()["observations"] == 0




# -- server-side RPC --------------------------------------------------------

async def register_rpc(client, token=b"rpc", mtype=CON):
    first = await client.request(GET, RPC, observe=0, token=token, mtype=mtype)
    assert code_text(first.code) == "2.05" and first.opt.observe == 0 and body(first) == {}
    return first


def call_rest(rest, path, payload):
    return defer.ensureDeferred(rest.post(path, payload))


@pytest_twisted.ensureDeferred
async def test_twoway_rpc_round_trip(node, coap, rest, device):
    await register_rpc(coap)
    waiting = call_rest(rest, f"/api/rpc/twoway/{device['id']['id']}", {"method": "setGpio", "params": {"pin": 7}})
    request = await notification(coap, b"rpc")
    assert request.opt.observe == 1 and body(request) == {"id": 1, "method": "setGpio", "params": {"pin": 7}}
    reply = await coap.request(POST, f"{RPC}/1", b'{"pin":7,"value":1}')
    assert code_text(reply.code) == "2.01"
    status, answer = await waiting
    assert status == 200 and answer == {"pin": 7, "value": 1}


@pytest_twisted.ensureDeferred
async def test_oneway_rpc_is_answered_when_delivered_and_ids_grow(node, coap, rest, device):
    await register_rpc(coap)
    for expected_id in (1, 2):
        waiting = call_rest(rest, f"/api/rpc/oneway/{device['id']['id']}", {"method": "reboot"})
        request = await notification(coap, b"rpc", ack=False)
        assert body(request) == {"id": expected_id, "method": "reboot", "params": None}
        assert not waiting.called  # not yet acknowledged
        coap.send_raw(tx.Message(mtype=ACK, mid=request.mid, code=tx.EMPTY).encode())
        status, answer = await waiting
        assert (status, answer) == (200, None)


@pytest_twisted.ensureDeferred
async def test_rpc_waits_for_a_device_that_is_not_observing(node, coap, rest, device):
    waiting = call_rest(rest, f"/api/rpc/twoway/{device['id']['id']}", {"method": "later", "timeout": 5000})
    await sleep(0.3)
    assert not waiting.called
    await register_rpc(coap)
    request = await notification(coap, b"rpc")
    assert body(request)["method"] == "later"
    await coap.request(POST, f"{RPC}/{body(request)['id']}", b'"done"')
    assert await waiting == (200, "done")


@pytest_twisted.ensureDeferred
async def test_rpc_that_expires_is_504(node, rest, device):
    status, answer = await rest.post(f"/api/rpc/twoway/{device['id']['id']}",
                                     {"method": "m", "expirationTime": now_ms() + 300})
    assert status == 504 and answer["status"] == 504 and answer["message"]
    status, page = await rest.get(f"/api/rpc/persistent/device/{device['id']['id']}")
    assert [r["status"] for r in page["data"]] == ["EXPIRED"]


@pytest_twisted.ensureDeferred
async def test_delivered_twoway_without_reply_times_out(node, coap, rest, device):
    await register_rpc(coap)
    waiting = call_rest(rest, f"/api/rpc/twoway/{device['id']['id']}", {"method": "m", "expirationTime": now_ms() + 400})
    await notification(coap, b"rpc")
    status, answer = await waiting
    assert status == 504
    _, page = await rest.get(f"/api/rpc/persistent/device/{device['id']['id']}")
    assert page["data"][0]["status"] == "TIMEOUT"


@pytest_twisted.ensureDeferred
async def test_unacknowledged_rpc_goes_back_to_the_queue(start_node, rest):
    fast = await start_node("--ack-timeout", "0.1", "--max-retransmit", "1")
    device, _ = await fast.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", fast.coap_address[1]))
    await register_rpc(client, b"first")
    answer = defer.ensureDeferred(fast.core.rpc.submit(device.id, {"method": "m", "persistent": True}, False))
    rpc_id = (await answer)["rpcId"]
    for _ in range(2):  # first send and its retransmission, never acknowledged
        assert body(await notification(client, b"first", ack=False))["id"] == 1
    await sleep(0.5)
    assert (await fast.core.rpc.get(rpc_id)).status == "QUEUED"
    await register_rpc(client, b"second")
    again = await notification(client, b"second")
    assert body(again)["id"] == 1
    await sleep(0.1)
    assert (await fast.core.rpc.get(rpc_id)).status == "DELIVERED"
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_persistent_rpc_survives_a_restart(start_node, tmp_path):
    data_dir = tmp_path / "persist"
    first = await start_node(data_dir=data_dir)
    device, _ = await first.core.devices.create("d", token="TOKEN-1")
    rpc_id = (await first.core.rpc.submit(device.id, {"method": "m", "persistent": True, "timeout": 60000},
                                          False))["rpcId"]
    await first.stopService()
    second = await start_node(data_dir=data_dir)
    client = await open_client(("127.0.0.1", second.coap_address[1]))
    assert (await second.core.rpc.get(rpc_id)).status == "QUEUED"
    await register_rpc(client)
    request = await notification(client, b"rpc")
    assert body(request)["id"] == 1
    await client.request(POST, f"{RPC}/1", b'{"r":1}')
    await sleep(0.1)
    rpc = await second.core.rpc.get(rpc_id)
    assert rpc.status == "SUCCESSFUL" and json.loads(rpc.response_json) == {"r": 1}
    next_id = (await second.core.rpc.submit(device.id, {"method": "n", "persistent": True}, False))["rpcId"]
    assert (await second.core.rpc.get(next_id)).request_id == 2
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_persistent_rpc_rest_calls(node, coap, rest, device):
    device_id = device["id"]["id"]
    status, answer = await rest.post(f"/api/rpc/twoway/{device_id}", {"method": "p", "params": [1], "persistent": True})
    assert status == 200 and set(answer) == {"rpcId"}
    status, rpc = await rest.get(f"/api/rpc/persistent/{answer['rpcId']}")
    assert status == 200 and rpc["status"] == "QUEUED" and rpc["request"]["id"] == 1
    assert rpc["request"]["method"] == "p" and rpc["request"]["params"] == [1]
    assert rpc["deviceId"]["id"] == device_id and rpc["expirationTime"] > rpc["createdTime"]
    await register_rpc(coap)
    await notification(coap, b"rpc")
    await coap.request(POST, f"{RPC}/1", b"[2]")
    await sleep(0.1)
    status, rpc = await rest.get(f"/api/rpc/persistent/{answer['rpcId']}")
    assert rpc["status"] == "SUCCESSFUL" and rpc["response"] == [2]
    status, _ = await rest.delete(f"/api/rpc/persistent/{answer['rpcId']}")
    assert status == 200
    assert (await rest.get(f"/api/rpc/persistent/{answer['rpcId']}"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_bad_rpc_bodies_are_400(node, rest, device):
    for payload in ({}, {"method": ""}, {"method": 5}, {"method": "m", "timeout": "x"},
                    {"method": "m", "persistent": "yes"}, [1]):
        status, answer = await rest.post(f"/api/rpc/oneway/{device['id']['id']}", payload)
        assert status == 400, payload
    assert (await rest.post("/api/rpc/oneway/no-such-device", {"method": "m"}))[0] == 404


@pytest_twisted.ensureDeferred
async def test_rpc_replies_for_unknown_ids_and_bad_ids(node, coap, device):
    assert code_text((await coap.request(POST, f"{RPC}/99", b"{}")).code) == "2.01"
    assert code_text((await coap.request(POST, f"{RPC}/x1", b"{}")).code) == "4.00"
    assert code_text((await coap.request(POST, f"{RPC}/1", b"{")).code) == "4.00"
    assert code_text((await coap.request(GET, RPC)).code) == "4.00"  # not observing
    assert code_text((await coap.request(GET, f"{RPC}/1")).code) == "4.05"


@pytest_twisted.ensureDeferred
async def test_rpc_deregistration_is_answered_with_empty_object(node, coap, device):
    await register_rpc(coap, b"x")
    answer = await coap.request(GET, RPC, observe=1, token=b"x")
    assert code_text(answer.code) == "2.05" and answer.opt.observe is None and body(answer) == {}
    assert node.coap.stats()["observations"] == 0


@pytest_twisted.ensureDeferred
async def test_shutdown_answers_waiting_rpc_callers_503_and_keeps_the_rpc(start_node, tmp_path):
    from tests.conftest import Rest

    data_dir = tmp_path / "stop"
    first = await start_node(data_dir=data_dir)
    device, _ = await first.core.devices.create("d", token="TOKEN-1")
    rest = Rest(f"http://127.0.0.1:{first.http_address[1]}")
    waiting = call_rest(rest, f"/api/rpc/twoway/{device.id}", {"method": "m", "timeout": 60000})
    await sleep(0.3)
    await first.stopService()
    status, answer = await waiting
    assert status == 503 and answer["status"] == 503
    second = await start_node(data_dir=data_dir)
    (rpc,) = await second.core.rpc.store.pending_rpcs(device.id)
    assert rpc.status == "QUEUED" and rpc.method == "m"


@pytest_twisted.ensureDeferred
async def test_deleting_the_device_answers_waiting_rpc_callers_404(node, rest, device):
    waiting = call_rest(rest, f"/api/rpc/twoway/{device['id']['id']}", {"method": "m", "timeout": 60000})
    await sleep(0.2)
    assert (await rest.delete(f"/api/device/{device['id']['id']}"))[0] == 200
    status, answer = await waiting
    assert status == 404 and "deleted" in answer["message"]
    assert node.core.rpc.stats()["waitingCallers"] == 0


@pytest_twisted.ensureDeferred
async def test_rpc_answered_with_rst_goes_back_to_the_queue(node, coap, rest, device):
    await register_rpc(coap)
    waiting = call_rest(rest, f"/api/rpc/twoway/{device['id']['id']}", {"method": "m"})
    request = await notification(coap, b"rpc", ack=False)
    coap.send_raw(tx.Message(mtype=RST, mid=request.mid, code=tx.EMPTY).encode())  # e.g. a rebooted device
    await sleep(0.2)
    _, page = await rest.get(f"/api/rpc/persistent/device/{device['id']['id']}")
    assert page["data"][0]["status"] == "QUEUED" and not waiting.called
    await register_rpc(coap, b"again")
    again = await notification(coap, b"again")
    assert body(again)["id"] == 1
    await coap.request(POST, f"{RPC}/1", b'"ok"')
    assert await waiting == (200, "ok")


@pytest_twisted.ensureDeferred
async def test_a_silent_observer_does_not_hold_up_the_next_rpc(start_node):
    slow = await start_node("--ack-timeout", "2")
    device, _ = await slow.core.devices.create("d", token="TOKEN-1")
    live = await open_client(("127.0.0.1", slow.coap_address[1]))
    silent = await open_client(("127.0.0.1", slow.coap_address[1]))
    await register_rpc(live, b"live")
    await register_rpc(silent, b"silent")  # never acknowledges anything
    for number in (1, 2):
        answer = defer.ensureDeferred(slow.core.rpc.submit(device.id, {"method": f"m{number}"}, True))
        assert body(await notification(live, b"live", timeout=1.5))["id"] == number
        assert (await answer).status == "SUCCESSFUL"
    await live.port.stopListening()
    await silent.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_every_rpc_observer_gets_the_rpc(node, coap, rest, device):
    other = await open_client(("127.0.0.1", node.coap_address[1]))
    await register_rpc(coap, b"one")
    await register_rpc(other, b"two", mtype=NON)
    waiting = call_rest(rest, f"/api/rpc/twoway/{device['id']['id']}", {"method": "both"})
    first = await notification(coap, b"one")
    second = await notification(other, b"two")
    assert body(first) == body(second) == {"id": 1, "method": "both", "params": None}
    await other.request(POST, f"{RPC}/1", b'"from two"')
    assert await waiting == (200, "from two")
    await other.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_rpcs_reach_the_new_token_while_the_old_relation_ends(node, coap, rest, device):
    device_id = device["id"]["id"]
    await register_rpc(coap, b"old")
    await rest.post("/api/device/credentials", {"deviceId": {"id": device_id}, "credentialsType": "ACCESS_TOKEN",
                                                "credentialsId": "TOKEN-2"})
    ended = await notification(coap, b"old", ack=False)  # not acknowledged: it stays in flight
    assert code_text(ended.code) == "4.01"
    fresh = await open_client(("127.0.0.1", node.coap_address[1]))
    first = await fresh.request(GET, "/api/v1/TOKEN-2/rpc", observe=0, token=b"new")
    assert code_text(first.code) == "2.05"
    waiting = call_rest(rest, f"/api/rpc/oneway/{device_id}", {"method": "m"})
    assert body(await notification(fresh, b"new"))["method"] == "m"
    assert (await waiting)[0] == 200
    await fresh.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stats_count_queued_rpcs(node, rest, device):
    for _ in range(2):
        await rest.post(f"/api/rpc/oneway/{device['id']['id']}", {"method": "m", "persistent": True})
    status, stats = await rest.get("/api/admin/stats")
    assert stats["rpc"]["queuedRpcs"] == 2 and stats["rpc"]["pendingRpcs"] == 2
    await rest.delete(f"/api/device/{device['id']['id']}")
    status, stats = await rest.get("/api/admin/stats")
    assert stats["rpc"]["queuedRpcs"] == 0 and stats["rpc"]["pendingRpcs"] == 0


@pytest_twisted.ensureDeferred
async def test_an_rpc_that_expired_without_its_timer_is_marked_expired_not_sent(node, coap, device):
    """(On several nodes the timer may have been on a node that went away.)"""
    from tbcoap.models import Rpc, new_id

    stale = await node.core.store.add_rpc(Rpc(id=new_id(), device_id=device["id"]["id"], request_id=0,
                                              method="old", expiration_time=now_ms() - 1000))
    await coap.request(GET, RPC, observe=0, token=b"rpc")
    for _ in range(50):
        if (await node.core.store.get_rpc(stale.id)).status == "EXPIRED":
            break
        await sleep(0.02)
    assert (await node.core.store.get_rpc(stale.id)).status == "EXPIRED"
    assert await coap.silence(0.3)  # nothing was sent
