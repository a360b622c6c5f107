"""The REST calls and spellings that exist for ThingsBoard's clients (docs/rest-api.md), over real
sockets: API-key headers, saving a device or profile by id, operator telemetry, deleting time series,
the older telemetry and RPC paths, provisioning's ``provisionState`` and gateways.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from tests.coapclient import GET, POST, code_text
from tests.conftest import ADMIN_KEY
from tests.test_observe_rpc import body as notification_body
from tests.test_observe_rpc import notification, register_rpc

TEL = "/api/plugins/telemetry/DEVICE"


def dev_id(device):
    return device["id"]["id"]


async def raw_get(rest, path, headers):
    response = await treq.get(rest.base + path, headers=headers)
    return response.code, json.loads(await response.content())


# -- keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["X-Authorization", "Authorization"])
@pytest_twisted.ensureDeferred
async def test_apikey_scheme_is_accepted(rest, device, header):
    status, body = await raw_get(rest, f"/api/device/{dev_id(device)}", {header: f"ApiKey {ADMIN_KEY}"})
    assert (status, body) == (200, device)
    status, body = await raw_get(rest, f"/api/device/{dev_id(device)}", {header: "ApiKey wrong"})
    assert status == 401 and body["status"] == 401


# -- devices -------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_tenant_device_by_name(rest, device):
    assert await rest.get("/api/tenant/device?deviceName=dev-1") == (200, device)
    status, body = await rest.get("/api/tenant/device?deviceName=nope")
    assert status == 404 and body["status"] == 404


@pytest_twisted.ensureDeferred
async def test_saving_a_device_with_its_id_updates_it(rest, coap, device):
    changed = {**device, "name": "dev-renamed", "label": "Hall", "type": "meters"}
    status, body = await rest.post("/api/device", changed)
    assert status == 200, body
    assert body == {**changed, "id": device["id"]}
    assert await rest.get(f"/api/device/{dev_id(device)}") == (200, body)
    assert (await rest.get("/api/tenant/device?deviceName=dev-1"))[0] == 404
    # the token is the device's still, and a new type names a new profile
    answer = await coap.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"t":1}')
    assert code_text(answer.code) == "2.01"
    status, profiles = await rest.get("/api/deviceProfiles?pageSize=10&page=0")
    assert "meters" in [p["name"] for p in profiles["data"]]


@pytest_twisted.ensureDeferred
async def test_saving_a_device_by_id_errors(rest, device):
    await rest.post("/api/device", {"name": "other"})
    status, body = await rest.post("/api/device", {"id": {"id": str(uuid.uuid4())}, "name": "x"})
    assert status == 404 and body["status"] == 404
    status, body = await rest.post("/api/device", {"id": device["id"], "name": "other"})
    assert status == 400 and "other" in body["message"]
    status, body = await rest.post("/api/device", {"id": "not-an-object", "name": "x"})
    assert status == 400
    assert await rest.get(f"/api/device/{dev_id(device)}") == (200, device)


@pytest_twisted.ensureDeferred
async def test_additional_info_only_when_the_device_has_some(rest, device):
    assert "additionalInfo" not in device
    status, body = await rest.post("/api/device", {"name": "gw", "additionalInfo": {"gateway": True}})
    assert status == 200 and body["additionalInfo"] == {"gateway": True}
    status, body = await rest.post("/api/device", {"name": "bad", "additionalInfo": [1]})
    assert status == 400


# -- telemetry written and deleted by an operator ----------------------------------------

async def history(rest, device, keys, **query):
    params = "&".join(f"{k}={v}" for k, v in {"keys": keys, "startTs": 0, "endTs": 10**13, "orderBy": "ASC",
                                             "useStrictDataTypes": "true", **query}.items())
    status, body = await rest.get(f"{TEL}/{dev_id(device)}/values/timeseries?{params}")
    assert status == 200, body
    return {key: [(p["ts"], p["value"]) for p in points] for key, points in body.items()}


async def latest(rest, device, keys):
    status, body = await rest.get(f"{TEL}/{dev_id(device)}/values/timeseries?keys={keys}&useStrictDataTypes=true")
    assert status == 200, body
    return {key: [(p["ts"], p["value"]) for p in points] for key, points in body.items()}


@pytest.mark.parametrize("payload", [
    {"t": 1.5, "s": "on"},
    [{"ts": 5000, "values": {"t": 1.5, "s": "on"}}],
    {"ts": 5000, "values": {"t": 1.5, "s": "on"}},
])
@pytest_twisted.ensureDeferred
async def test_operator_telemetry_in_every_device_form(rest, device, payload):
    status, body = await rest.post(f"{TEL}/{dev_id(device)}/timeseries/ANY", payload)
    assert status == 200, body
    stored = await latest(rest, device, "t,s")
    assert [v for _, v in stored["t"]] == [1.5] and [v for _, v in stored["s"]] == ["on"]
    if isinstance(payload, (list, dict)) and "t" not in payload:
        assert stored["t"][0][0] == 5000


@pytest_twisted.ensureDeferred
async def test_operator_telemetry_with_a_ttl_and_bad_input(rest, device):
    base = f"{TEL}/{dev_id(device)}/timeseries/ANY"
    now = int(time.time() * 1000)  # a point whose TTL has not passed (one at ts 1000 would be expired at once)
    assert (await rest.post(base + "/3600", [{"ts": now, "values": {"k": 1}}]))[0] == 200
    assert await history(rest, device, "k") == {"k": [(now, 1)]}
    for path, payload in ((base + "/-1", {"k": 2}), (base + "/abc", {"k": 2}), (base, [1, 2]),
                          (base, "text")):
        status, body = await rest.post(path, payload)
        assert status == 400 and body["status"] == 400, (path, payload)
    status, body = await rest.post(f"{TEL}/{uuid.uuid4()}/timeseries/ANY", {"k": 2})
    assert status == 404
    assert await history(rest, device, "k") == {"k": [(now, 1)]}


async def three_points(rest, device):
    points = [{"ts": ts, "values": {"a": ts // 1000, "b": -ts // 1000}} for ts in (1000, 2000, 3000)]
    assert (await rest.post(f"{TEL}/{dev_id(device)}/timeseries/ANY", points))[0] == 200


@pytest_twisted.ensureDeferred
async def test_delete_all_data_for_keys(rest, device):
    await three_points(rest, device)
    status, _ = await rest.delete(f"{TEL}/{dev_id(device)}/timeseries/delete?keys=a&deleteAllDataForKeys=true")
    assert status == 200
    assert await history(rest, device, "a,b") == {"b": [(1000, -1), (2000, -2), (3000, -3)]}
    status, keys = await rest.get(f"{TEL}/{dev_id(device)}/keys/timeseries")
    assert keys == ["b"]


@pytest_twisted.ensureDeferred
async def test_delete_a_range_and_rewrite_latest(rest, device):
    await three_points(rest, device)
    base = f"{TEL}/{dev_id(device)}/timeseries/delete?keys=a,b&startTs=2500&endTs=3500"
    assert (await rest.delete(base + "&rewriteLatestIfDeleted=true"))[0] == 200
    assert await history(rest, device, "a") == {"a": [(1000, 1), (2000, 2)]}
    assert await latest(rest, device, "a,b") == {"a": [(2000, 2)], "b": [(2000, -2)]}
    # without rewriting, the deleted latest value is simply gone
    assert (await rest.delete(f"{TEL}/{dev_id(device)}/timeseries/delete?keys=a&startTs=1500&endTs=2500"))[0] == 200
    assert await history(rest, device, "a") == {"a": [(1000, 1)]}
    status, body = await rest.get(f"{TEL}/{dev_id(device)}/values/timeseries?keys=a")
    assert status == 200 and "a" not in body


@pytest_twisted.ensureDeferred
async def test_delete_keeping_the_latest(rest, device):
    await three_points(rest, device)
    query = "keys=a&startTs=2500&endTs=3500&deleteLatest=false"
    assert (await rest.delete(f"{TEL}/{dev_id(device)}/timeseries/delete?{query}"))[0] == 200
    assert await history(rest, device, "a") == {"a": [(1000, 1), (2000, 2)]}
    assert await latest(rest, device, "a") == {"a": [(3000, 3)]}


@pytest.mark.parametrize("query", ["", "keys=a", "keys=a&startTs=1", "keys=a&startTs=x&endTs=2",
                                   "keys=a&deleteAllDataForKeys=maybe"])
@pytest_twisted.ensureDeferred
async def test_delete_timeseries_bad_query_is_400(rest, device, query):
    await three_points(rest, device)
    status, body = await rest.delete(f"{TEL}/{dev_id(device)}/timeseries/delete?{query}")
    assert status == 400 and body["status"] == 400 and body["message"]
    assert len((await history(rest, device, "a"))["a"]) == 3


# -- ThingsBoard's older spellings ----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_older_attribute_paths(rest, coap, device):
    path = f"/api/plugins/telemetry/{dev_id(device)}/SHARED_SCOPE"
    response = await treq.post(rest.base + path, data=b'{"mode":"eco"}',
                               headers={"X-Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/plain"})
    assert response.code == 200
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes", query=["sharedKeys=mode"])
    assert json.loads(answer.payload) == {"shared": {"mode": "eco"}}
    assert (await rest.delete(path + "?keys=mode"))[0] == 200
    status, body = await rest.get(f"{TEL}/{dev_id(device)}/values/attributes/SHARED_SCOPE")
    assert (status, body) == (200, [])


@pytest.mark.parametrize("kind", ["oneway", "twoway"])
@pytest_twisted.ensureDeferred
async def test_older_rpc_paths(rest, coap, device, kind):
    await register_rpc(coap)
    waiting = defer.ensureDeferred(rest.post(f"/api/plugins/rpc/{kind}/{dev_id(device)}", {"method": "ping"}))
    request = await notification(coap, b"rpc")
    assert notification_body(request) == {"id": 1, "method": "ping", "params": None}
    if kind == "twoway":
        await coap.request(POST, "/api/v1/TOKEN-1/rpc/1", b'{"pong":true}')
    status, answer = await waiting
    assert (status, answer) == (200, {"pong": True} if kind == "twoway" else None)


# -- profiles ------------------------------------------------------------------------------

NESTED = {"name": "sensors", "type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "ALLOW_CREATE_NEW_DEVICES",
          "provisionDeviceKey": "key-n",
          "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"},
                          "provisionConfiguration": {"type": "ALLOW_CREATE_NEW_DEVICES",
                                                     "provisionDeviceSecret": "secret-n"}}}


@pytest_twisted.ensureDeferred
async def test_profile_in_thingsboards_nested_form(rest, coap):
    status, created = await rest.post("/api/deviceProfile", NESTED)
    assert status == 200, created
    assert created["provisionDeviceSecret"] == "secret-n" and created["provisionDeviceKey"] == "key-n"
    assert created["profileData"]["provisionConfiguration"] == {"type": "ALLOW_CREATE_NEW_DEVICES",
                                                                "provisionDeviceSecret": "secret-n"}
    answer = await coap.request(POST, "/api/v1/provision", json.dumps(
        {"deviceName": "n-1", "provisionDeviceKey": "key-n", "provisionDeviceSecret": "secret-n"}).encode())
    assert code_text(answer.code) == "2.01" and json.loads(answer.payload)["status"] == "SUCCESS"


@pytest_twisted.ensureDeferred
async def test_saving_a_profile_with_its_id_updates_it(rest, coap):
    _, created = await rest.post("/api/deviceProfile", NESTED)
    await rest.post("/api/device", {"name": "d-1", "type": "sensors"})
    changed = {**created, "name": "probes", "provisionType": "DISABLED"}
    status, body = await rest.post("/api/deviceProfile", changed)
    assert status == 200 and body["id"] == created["id"] and body["name"] == "probes"
    assert body["provisionType"] == "DISABLED"
    status, device = await rest.get("/api/tenant/device?deviceName=d-1")
    assert device["type"] == "probes"  # a device's type is its profile's name
    answer = await coap.request(POST, "/api/v1/provision", json.dumps(
        {"deviceName": "n-2", "provisionDeviceKey": "key-n", "provisionDeviceSecret": "secret-n"}).encode())
    assert code_text(answer.code) == "4.00"
    status, body = await rest.post("/api/deviceProfile", {**changed, "id": {"id": str(uuid.uuid4())}})
    assert status == 404


# -- provisioning ---------------------------------------------------------------------------

async def provision(coap, path="/api/v1/provision", **extra):
    request = {"deviceName": "p-1", "provisionDeviceKey": "key-n", "provisionDeviceSecret": "secret-n", **extra}
    answer = await coap.request(POST, path, json.dumps(request).encode())
    return code_text(answer.code), json.loads(answer.payload)


@pytest_twisted.ensureDeferred
async def test_provision_state_and_provisioning_again(rest, coap):
    await rest.post("/api/deviceProfile", NESTED)
    code, first = await provision(coap, path="/api/v1/any-segment/provision")
    assert code == "2.01" and first["status"] == "SUCCESS"
    _, device = await rest.get("/api/tenant/device?deviceName=p-1")
    status, server = await rest.get(f"{TEL}/{dev_id(device)}/values/attributes/SERVER_SCOPE?keys=provisionState")
    assert status == 200 and [(a["key"], a["value"]) for a in server] == [("provisionState", "provisioned")]
    # ALLOW_CREATE_NEW_DEVICES: the name is taken now
    assert (await provision(coap))[1]["status"] == "FAILURE"


@pytest_twisted.ensureDeferred
async def test_pre_provisioned_device_again_after_its_state_is_deleted(rest, coap):
    profile = {**NESTED, "provisionType": "CHECK_PRE_PROVISIONED_DEVICES", "profileData": {
        "provisionConfiguration": {"type": "CHECK_PRE_PROVISIONED_DEVICES", "provisionDeviceSecret": "secret-n"}}}
    assert (await rest.post("/api/deviceProfile", profile))[0] == 200
    _, device = await rest.post("/api/device?accessToken=PRE-1", {"name": "p-1", "type": "sensors"})
    assert await provision(coap) == ("2.01", {"credentialsValue": "PRE-1", "credentialsType": "ACCESS_TOKEN",
                                              "status": "SUCCESS"})
    assert (await provision(coap))[1]["status"] == "FAILURE"
    assert (await rest.delete(f"{TEL}/{dev_id(device)}/SERVER_SCOPE?keys=provisionState"))[0] == 200
    assert (await provision(coap))[0] == "2.01"
    assert (await provision(coap))[1]["status"] == "FAILURE"
    # any value of the attribute counts as provisioned
    assert (await rest.delete(f"{TEL}/{dev_id(device)}/SERVER_SCOPE?keys=provisionState"))[0] == 200
    assert (await rest.post(f"{TEL}/{dev_id(device)}/SERVER_SCOPE", {"provisionState": "manual"}))[0] == 200
    assert (await provision(coap))[1]["status"] == "FAILURE"


@pytest_twisted.ensureDeferred
async def test_provisioning_a_gateway(rest, coap):
    await rest.post("/api/deviceProfile", NESTED)
    code, answer = await provision(coap, deviceName="gw-1", gateway=True)
    assert code == "2.01", answer
    _, gateway = await rest.get("/api/tenant/device?deviceName=gw-1")
    assert gateway["additionalInfo"] == {"gateway": True}
    await provision(coap, deviceName="plain-1", gateway=False)
    _, plain = await rest.get("/api/tenant/device?deviceName=plain-1")
    assert "additionalInfo" not in plain
