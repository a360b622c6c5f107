"""Sleepy devices (power saving, docs/device-api.md): ThingsBoard's power-saving settings on
profiles and devices, downlinks held outside a device's window, and activity judged by requests."""

import json

import pytest_twisted
from twisted.internet import reactor, task

from tests.coapclient import ACK, CON, GET, POST, code_text, open_client
from tests.conftest import Rest

PSM_PROFILE = {"name": "sleepers", "transportType": "COAP", "profileData": {"transportConfiguration": {
    "type": "COAP", "clientSettings": {"powerMode": "PSM", "psmActivityTimer": 2000}}}}


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_power_settings_of_profiles_and_devices_through_rest(rest):
    status, profile = await rest.post("/api/deviceProfile", PSM_PROFILE)
    assert status == 200, profile
    assert profile["profileData"]["transportConfiguration"]["clientSettings"] == {"powerMode": "PSM",
                                                                                  "psmActivityTimer": 2000}
    status, device = await rest.post("/api/device", {"name": "d1", "type": "sleepers"})
    assert status == 200 and "deviceData" not in device  # none of its own: the profile's settings
    own = {"type": "COAP", "powerMode": "E_DRX", "edrxCycle": 81000, "pagingTransmissionWindow": 3000}
    body = {**device, "deviceData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": own}}
    status, changed = await rest.post("/api/device", body)
    assert status == 200 and changed["deviceData"]["transportConfiguration"] == own
    status, read = await rest.get(f"/api/device/{device['id']['id']}")
    assert read["deviceData"]["transportConfiguration"] == own
    body["deviceData"] = {"transportConfiguration": {"type": "DEFAULT"}}
    status, reset = await rest.post("/api/device", body)
    assert status == 200 and "deviceData" not in reset
    for bad in ({"type": "COAP", "powerMode": "SLEEP"}, {"type": "COAP", "psmActivityTimer": -1},
                {"type": "COAP", "edrxCycle": "10s"}, {"type": "MQTT"}):
        status, answer = await rest.post("/api/device", {"name": "bad", "deviceData": {"transportConfiguration": bad}})
        assert status == 400 and answer["message"], bad
    bad_profile = json.loads(json.dumps(PSM_PROFILE))
    bad_profile["name"] = "bad"
    bad_profile["profileData"]["transportConfiguration"]["clientSettings"]["powerMode"] = "OFF"
    status, answer = await rest.post("/api/deviceProfile", bad_profile)
    assert status == 400 and "powerMode" in answer["message"]


# -- a sleeping device, with real timing -----------------------------------------------------

WINDOW_S = 2.0  # the profile's psmActivityTimer


async def sleepy_device(rest, token="SLEEPY-1"):
    status, profile = await rest.post("/api/deviceProfile", PSM_PROFILE)
    assert status == 200, profile
    status, device = await rest.post(f"/api/device?accessToken={token}", {"name": token, "type": "sleepers"})
    assert status == 200, device
    return device["id"]["id"]


class Device:
    """A sleepy device's CoAP side: its observations and what reached them."""

    def __init__(self, client, token):
        self.client, self.token = client, token
        self.seen = 0  # how many of client.received were looked at

    async def observe(self):
        for path, tok in (("attributes", b"attr"), ("rpc", b"rpc")):
            first = await self.client.request(GET, f"/api/v1/{self.token}/{path}", observe=0, token=tok)
            assert code_text(first.code) == "2.05"
        self.seen = len(self.client.received)  # (the registrations' answers)

    async def uplink(self):
        answer = await self.client.request(POST, f"/api/v1/{self.token}/telemetry", b'{"battery":3.6}')
        assert code_text(answer.code) == "2.01"

    def notifications(self):
        """The notifications that arrived since the last call, ACKed, as (token, JSON) pairs."""
        out = []
        for message in self.client.received[self.seen:]:
            if message.token in (b"attr", b"rpc") and message.opt.observe is not None:
                if message.mtype == CON:
                    self.client.send_raw(type(message)(mtype=ACK, mid=message.mid, code=0).encode())
                out.append((message.token, json.loads(message.payload)))
        self.seen = len(self.client.received)
        return out


async def rpc_later(rest, device_id, method, **extra):
    from twisted.internet import defer

    return defer.ensureDeferred(rest.post(f"/api/rpc/oneway/{device_id}", {"method": method, "params": {},
                                                                         "timeout": 30000, **extra}))


async def play_sleeping_device(node_rest, device_rest, coap_address, device_id, token="SLEEPY-1"):
    """The device observes, falls asleep; changes and RPCs made meanwhile reach it as one merged
    notification and its RPCs in order at its next uplink; one that expired never does."""
    from tests.coapclient import open_client as _open
    from twisted.internet import defer

    device = Device(await _open(coap_address), token)
    await device.observe()
    await sleep(WINDOW_S + 0.4)  # its window closes
    shared = f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE"
    assert (await node_rest.post(shared, {"a": 1, "b": 2}))[0] == 200
    assert (await node_rest.post(shared, {"a": 2}))[0] == 200
    assert (await node_rest.delete(f"{shared}?keys=b"))[0] == 200
    first = await rpc_later(node_rest, device_id, "first")
    await sleep(0.2)  # queued first (two calls at once may take their ids in either order)
    second = await rpc_later(node_rest, device_id, "second")
    from tbcoap.models import now_ms
    doomed = await rpc_later(node_rest, device_id, "doomed", expirationTime=now_ms() + 1000)
    await sleep(1.5)
    assert device.notifications() == []  # nothing while it sleeps
    assert (await doomed)[0] == 504  # expired while it slept: the caller hears at once
    assert not first.called and not second.called
    await device.uplink()
    await sleep(0.5)
    got = device.notifications()
    await sleep(0.5)
    got += device.notifications()
    assert [body for tok, body in got if tok == b"attr"] == [{"a": 2, "deleted": ["b"]}]
    assert [body["method"] for tok, body in got if tok == b"rpc"] == ["first", "second"]
    assert (await first)[0] == 200 and (await second)[0] == 200
    status, page = await node_rest.get(f"/api/rpc/persistent/device/{device_id}?pageSize=10&page=0")
    statuses = {r["request"]["method"]: r["status"] for r in page["data"]}
    assert statuses["doomed"] == "EXPIRED"
    # awake now: a change goes at once, as ThingsBoard's update (no deletions: the keys only)
    assert (await node_rest.post(shared, {"c": 3}))[0] == 200
    await sleep(0.3)
    assert [body for tok, body in device.notifications() if tok == b"attr"] == [{"c": 3}]
    await device.client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_psm_device_gets_its_downlinks_at_its_next_uplink_on_sqlite(node, rest):
    device_id = await sleepy_device(rest)
    await play_sleeping_device(rest, rest, ("127.0.0.1", node.coap_address[1]), device_id)


@pytest_twisted.ensureDeferred
async def test_a_psm_device_gets_its_downlinks_at_its_next_uplink_on_redis(start_node):
    from tests.conftest import shared_store_url

    with shared_store_url("redis") as url:
        node = await start_node("--store", url)
        rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
        device_id = await sleepy_device(rest)
        await play_sleeping_device(rest, rest, ("127.0.0.1", node.coap_address[1]), device_id)
        await node.stopService()


@pytest_twisted.ensureDeferred
async def test_an_rpc_made_on_one_node_reaches_the_device_waking_on_the_other(start_node):
    from tests.conftest import shared_store_url

    with shared_store_url("redis") as url:
        a = await start_node("--store", url)
        b = await start_node("--store", url)
        rest_a = Rest(f"http://127.0.0.1:{a.http_address[1]}")
        device_id = await sleepy_device(rest_a)
        device = Device(await open_client(("127.0.0.1", b.coap_address[1])), "SLEEPY-1")
        await device.observe()
        await sleep(WINDOW_S + 0.4)
        call = await rpc_later(rest_a, device_id, "wake-up")
        await sleep(1.0)
        assert device.notifications() == [] and not call.called
        await device.uplink()
        await sleep(0.5)
        assert [body["method"] for tok, body in device.notifications() if tok == b"rpc"] == ["wake-up"]
        assert (await call)[0] == 200
        await device.client.port.stopListening()
        await a.stopService()
        await b.stopService()


@pytest_twisted.ensureDeferred
async def test_an_observing_device_without_requests_turns_inactive(node, rest):
    status, device = await rest.post("/api/device?accessToken=OBS-1", {"name": "observer"})
    device_id = device["id"]["id"]
    server = f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SERVER_SCOPE"
    assert (await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SERVER_SCOPE",
                            {"inactivityTimeout": 4000}))[0] == 200
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    first = await client.request(GET, "/api/v1/OBS-1/attributes", observe=0, token=b"a")
    assert code_text(first.code) == "2.05"
    status, values = await rest.get(f"{server}?keys=active,lastActivityTime")
    assert {v["key"]: v["value"] for v in values}["active"] is True  # its request was activity
    await sleep(2.5)  # written within a turn of the loop
    stored = await node.core.store.get_attributes(device_id, "SERVER_SCOPE", None)
    assert stored["active"][0] is True and stored["lastConnectTime"][0] > 0
    await sleep(4.5)  # past its timeout and a turn: the open observation does not keep it active
    status, values = await rest.get(server)
    values = {v["key"]: v["value"] for v in values}
    assert values["active"] is False
    stored = await node.core.store.get_attributes(device_id, "SERVER_SCOPE", None)
    assert stored["active"][0] is False and stored["inactivityAlarmTime"][0] >= stored["lastActivityTime"][0]
    assert node.observers.stats()["attributeObservations"] == 1
    # a request makes it active again
    assert code_text((await client.request(POST, "/api/v1/OBS-1/telemetry", b'{"t":1}')).code) == "2.01"
    status, values = await rest.get(f"{server}?keys=active")
    assert [v["value"] for v in values] == [True]
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_device_infos_and_metrics_tell_activity_and_power(node, rest):
    import treq

    device_id = await sleepy_device(rest, "INFO-1")
    await rest.post("/api/device?accessToken=AWAKE-1", {"name": "awake"})
    status, page = await rest.get("/api/tenant/deviceInfos?pageSize=10&page=0&sortProperty=name")
    assert status == 200
    assert [(d["name"], d["powerMode"], d["active"]) for d in page["data"]] == [
        ("INFO-1", "PSM", False), ("awake", None, False)]
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    assert code_text((await client.request(POST, "/api/v1/INFO-1/telemetry", b'{"t":1}')).code) == "2.01"
    status, page = await rest.get("/api/tenant/deviceInfos?pageSize=10&page=0&sortProperty=name")
    assert [(d["name"], d["active"]) for d in page["data"]] == [("INFO-1", True), ("awake", False)]
    assert page["data"][0]["lastActivityTime"] > 0 and page["data"][0]["id"]["id"] == device_id
    await sleep(2.5)  # one turn of the activity loop
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}/metrics",
                              headers={"X-Authorization": "Bearer " + rest.key})
    text = (await response.content()).decode()
    assert "tbcoap_active_devices 1.0" in text
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_rpcs_waiting_for_one_device_are_bounded(start_node):
    node = await start_node("--max-queued-rpcs", "2")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    device_id = await sleepy_device(rest, "BOUND-1")
    for method in ("one", "two"):
        status, answer = await rest.post(f"/api/rpc/oneway/{device_id}", {"method": method, "persistent": True})
        assert status == 200, answer
    status, answer = await rest.post(f"/api/rpc/oneway/{device_id}", {"method": "three", "persistent": True})
    assert status == 429 and "2 rpcs already wait" in answer["message"]


@pytest_twisted.ensureDeferred
async def test_changes_held_past_the_bound_become_the_whole_set_at_the_next_uplink(start_node):
    node = await start_node("--max-held-attributes", "200")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    device_id = await sleepy_device(rest, "HELD-1")
    shared = f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE"
    assert (await rest.post(shared, {"gone": 1}))[0] == 200
    device = Device(await open_client(("127.0.0.1", node.coap_address[1])), "HELD-1")
    await device.observe()
    await sleep(WINDOW_S + 0.4)
    for n in range(10):
        assert (await rest.post(shared, {f"k{n}": "x" * 40}))[0] == 200
    assert (await rest.delete(f"{shared}?keys=gone"))[0] == 200
    await device.uplink()
    await sleep(0.5)
    attrs = [body for tok, body in device.notifications() if tok == b"attr"]
    assert attrs == [{f"k{n}": "x" * 40 for n in range(10)}]  # the whole current set, in one notification
    await device.client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_rpcs_waiting_for_a_sleeping_device_survive_a_restart(start_node, tmp_path):
    node = await start_node(data_dir=tmp_path / "kept")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    device_id = await sleepy_device(rest, "KEPT-1")
    device = Device(await open_client(("127.0.0.1", node.coap_address[1])), "KEPT-1")
    await device.observe()
    await sleep(WINDOW_S + 0.4)
    status, answer = await rest.post(f"/api/rpc/oneway/{device_id}", {"method": "after-restart", "persistent": True,
                                                                       "timeout": 60000})
    assert status == 200
    await sleep(0.5)
    assert device.notifications() == []
    await device.client.port.stopListening()
    await node.stopService()
    again = await start_node(data_dir=tmp_path / "kept")
    device = Device(await open_client(("127.0.0.1", again.coap_address[1])), "KEPT-1")
    await device.observe()  # its next uplink, on the restarted node
    await sleep(0.5)
    assert [body["method"] for tok, body in device.notifications() if tok == b"rpc"] == ["after-restart"]
    await device.client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_every_node_of_a_shared_store_judges_activity_alike(start_node):
    from tests.conftest import shared_store_url

    with shared_store_url("redis") as url:
        a = await start_node("--store", url)
        b = await start_node("--store", url)
        rest_a, rest_b = (Rest(f"http://127.0.0.1:{n.http_address[1]}") for n in (a, b))
        status, device = await rest_a.post("/api/device?accessToken=BOTH-1", {"name": "both"})
        device_id = device["id"]["id"]
        await rest_a.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SERVER_SCOPE", {"inactivityTimeout": 4000})
        server = f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SERVER_SCOPE?keys=active"

        async def active(rest):
            status, values = await rest.get(server)
            assert status == 200
            return values[0]["value"]

        client = await open_client(("127.0.0.1", a.coap_address[1]))
        assert code_text((await client.request(POST, "/api/v1/BOTH-1/telemetry", b'{"t":1}')).code) == "2.01"
        await client.port.stopListening()
        await sleep(2.5)  # a's loop wrote it
        assert (await active(rest_a), await active(rest_b)) == (True, True)
        await a.stopService()  # the node that heard it goes away before the device's timeout
        await sleep(2.5)
        assert await active(rest_b) is False  # judged from the stored times, not a's stale "true"
        stored = await b.core.store.get_attributes(device_id, "SERVER_SCOPE", ["active"])
        assert stored["active"][0] is True  # nobody was left to write it; readers are not misled
        await b.stopService()


@pytest_twisted.ensureDeferred
async def test_a_turn_of_the_activity_loop_costs_the_devices_that_changed(tmp_path):
    """2,000 active devices, 10 of them heard again: the next turn writes 10, reads nothing, and
    no device is looked at again until its deadline."""
    from tbcoap.models import Device as Dev, new_id
    from tbcoap.services.activity import ActivityTracker
    from tbcoap_sqlite import make_store
    from twisted.internet import defer

    (tmp_path / "s").mkdir()
    store = make_store("sqlite://" + str(tmp_path / "s" / "db.sqlite3"), {})
    await store.open()
    ids = [new_id() for _ in range(2000)]
    await defer.gatherResults([store.add_device(Dev(id=i, name=f"d{n}"), f"t{n}") for n, i in enumerate(ids)])
    tracker = ActivityTracker(store, timeout_ms=600_000)
    for device_id in ids:
        tracker.touch(device_id)
    await tracker.flush()
    assert tracker.tracked() == 2000 and tracker.transitions == 2000
    reads, writes = store.stats()["reads"], store.stats()["writes"]
    for device_id in ids[:10]:
        tracker.touch(device_id)
    await tracker.flush()
    assert store.stats()["writes"] - writes == 10 and store.stats()["reads"] == reads
    writes = store.stats()["writes"]
    await tracker.flush()  # nobody heard, nobody due
    assert store.stats()["writes"] == writes and store.stats()["reads"] == reads
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_device_set_to_drx_while_it_sleeps_gets_what_was_held_at_once(node, rest):
    device_id = await sleepy_device(rest, "SWITCH-1")
    device = Device(await open_client(("127.0.0.1", node.coap_address[1])), "SWITCH-1")
    await device.observe()
    await sleep(WINDOW_S + 0.4)
    shared = f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE"
    assert (await rest.post(shared, {"mode": "eco"}))[0] == 200
    await sleep(0.3)
    assert device.notifications() == []
    status, current = await rest.get(f"/api/device/{device_id}")
    body = {**current, "deviceData": {"transportConfiguration": {"type": "COAP", "powerMode": "DRX"}}}
    assert (await rest.post("/api/device", body))[0] == 200
    await sleep(0.5)
    assert [b for tok, b in device.notifications() if tok == b"attr"] == [{"mode": "eco"}]
    await device.client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_activity_attributes_written_by_an_operator_do_not_break_reads(node, rest):
    status, device = await rest.post("/api/device?accessToken=ODD-1", {"name": "odd"})
    device_id = device["id"]["id"]
    odd = {"lastActivityTime": "yesterday", "inactivityTimeout": "long", "active": "maybe"}
    assert (await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SERVER_SCOPE", odd))[0] == 200
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    assert code_text((await client.request(POST, "/api/v1/ODD-1/telemetry", b'{"t":1}')).code) == "2.01"
    status, values = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SERVER_SCOPE")
    values = {v["key"]: v["value"] for v in values}
    assert status == 200 and values["active"] is True and isinstance(values["lastActivityTime"], int)
    await sleep(2.5)
    stored = await node.core.store.get_attributes(device_id, "SERVER_SCOPE", ["active"])
    assert stored["active"][0] is True
    await client.port.stopListening()
