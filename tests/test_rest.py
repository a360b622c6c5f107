"""The HTTP REST API (docs/rest-api.md), tested over real sockets against an in-process node.

Each test drives the API with the admin key (``rest``) and, where the API ties a REST call to
what a device sees, checks the device side with a raw CoAP client (``coap``).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import pytest_twisted
import treq

from tests.conftest import ADMIN_KEY
from tests.coapclient import GET, POST

CREATED, CONTENT, UNAUTHORIZED = 65, 69, 129  # 2.01, 2.05, 4.01
JSON_FORMAT = 50
TEL = "/api/plugins/telemetry/DEVICE"


def now_ms():
    return int(time.time() * 1000)


def assert_error(status, body, expected):
    """An error answer: the expected status and exactly ``{"status": .., "message": ..}``."""
    assert status == expected, body
    assert isinstance(body, dict), body
    assert set(body) == {"status", "message"}, body
    assert body["status"] == expected
    assert isinstance(body["message"], str) and body["message"]


async def create(rest, name, token=None, **fields):
    path = "/api/device" + (f"?accessToken={token}" if token else "")
    status, body = await rest.post(path, {"name": name, **fields})
    assert status == 200, body
    return body


async def post_telemetry(coap, token, payload):
    if not isinstance(payload, (bytes, str)):
        payload = json.dumps(payload)
    return await coap.request(POST, f"/api/v1/{token}/telemetry", payload)


def dev_id(device):
    return device["id"]["id"]


# -- authentication and errors ------------------------------------------------

# (method, path) of every call in routes.py that needs a key.
KEYED_CALLS = [
    ("POST", "/api/device"),
    ("POST", "/api/device/credentials"),
    ("GET", "/api/device/{id}"),
    ("DELETE", "/api/device/{id}"),
    ("GET", "/api/device/{id}/credentials"),
    ("GET", "/api/tenant/devices?pageSize=10&page=0"),
    ("GET", "/api/tenant/devices?deviceName=dev-1"),
    ("GET", TEL + "/{id}/keys/timeseries"),
    ("GET", TEL + "/{id}/values/timeseries"),
    ("GET", TEL + "/{id}/keys/attributes"),
    ("GET", TEL + "/{id}/keys/attributes/SHARED_SCOPE"),
    ("GET", TEL + "/{id}/values/attributes"),
    ("GET", TEL + "/{id}/values/attributes/SHARED_SCOPE"),
    ("POST", TEL + "/{id}/SHARED_SCOPE"),
    ("POST", TEL + "/{id}/attributes/SERVER_SCOPE"),
    ("DELETE", TEL + "/{id}/SHARED_SCOPE?keys=a"),
    ("GET", "/api/admin/stats"),
    ("GET", "/api/admin/plugins"),
    ("GET", "/api/auth/user"),
    ("GET", "/api/tenant/customers?customerTitle=x"),
]


@pytest.mark.parametrize("method,path", KEYED_CALLS)
@pytest_twisted.ensureDeferred
async def test_every_call_needs_a_key(rest, device, method, path):
    path = path.replace("{id}", dev_id(device))
    body = {"k": 1} if method == "POST" else None
    status, answer = await rest.call(method, path, body, key="")
    assert_error(status, answer, 401)
    status, answer = await rest.call(method, path, body, key="not-the-key")
    assert_error(status, answer, 401)
    # the device and its attributes are untouched by refused calls
    status, answer = await rest.get(f"/api/device/{dev_id(device)}")
    assert status == 200 and answer == device
    status, answer = await rest.get(f"{TEL}/{dev_id(device)}/values/attributes/SHARED_SCOPE")
    assert (status, answer) == (200, [])
    status, answer = await rest.get("/api/tenant/devices?pageSize=10&page=0")
    assert answer["totalElements"] == 1
    status, answer = await rest.get(f"/api/device/{dev_id(device)}/credentials")
    assert answer["credentialsId"] == "TOKEN-1"


@pytest_twisted.ensureDeferred
async def test_authorization_header_also_accepted(rest, device):
    url = rest.base + f"/api/device/{dev_id(device)}"
    response = await treq.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.code == 200
    assert json.loads(await response.content()) == device
    response = await treq.get(url, headers={"Authorization": "Bearer wrong"})
    assert response.code == 401
    body = json.loads(await response.content())
    assert set(body) == {"status", "message"} and body["status"] == 401


@pytest_twisted.ensureDeferred
async def test_key_without_bearer_scheme_is_refused(rest, device):
    url = rest.base + f"/api/device/{dev_id(device)}"
    response = await treq.get(url, headers={"X-Authorization": ADMIN_KEY})
    assert response.code == 401
    response = await treq.get(url, headers={"X-Authorization": f"Basic {ADMIN_KEY}"})
    assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_health_needs_no_key(rest):
    for key in ("", "wrong", None):
        status, body = await rest.call("GET", "/api/health", key=key)
        assert (status, body) == (200, {"status": "UP"})


@pytest_twisted.ensureDeferred
async def test_answers_are_json(rest, device):
    headers = {"X-Authorization": f"Bearer {ADMIN_KEY}"}
    for path, code in ((f"/api/device/{dev_id(device)}", 200), (f"/api/device/{uuid.uuid4()}", 404),
                       ("/api/no/such", 404)):
        response = await treq.get(rest.base + path, headers=headers)
        assert response.code == code
        assert response.headers.getRawHeaders("content-type")[0].startswith("application/json")
        json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_health_reports_coap_down(rest, node):
    await node.coap_port.stopListening()
    status, body = await rest.call("GET", "/api/health", key="")
    assert status == 503
    assert "coap" in json.dumps(body)
    assert "store" not in json.dumps(body)


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_json_404(rest):
    status, body = await rest.get("/api/no/such/thing")
    assert_error(status, body, 404)
    status, body = await rest.get("/nothing")
    assert_error(status, body, 404)


@pytest.mark.parametrize("method,path", [
    ("PUT", "/api/device"),
    ("GET", "/api/device"),
    ("DELETE", "/api/tenant/devices"),
    ("POST", "/api/health"),
    ("POST", "/api/admin/stats"),
    ("PUT", TEL + "/{id}/SHARED_SCOPE"),
    ("POST", TEL + "/{id}/values/timeseries"),
])
@pytest_twisted.ensureDeferred
async def test_wrong_method_on_known_path_is_json_405(rest, device, method, path):
    status, body = await rest.call(method, path.replace("{id}", dev_id(device)))
    assert_error(status, body, 405)


@pytest.mark.parametrize("method,path", [("GET", "/api/no/such/thing"), ("PUT", "/api/device")])
@pytest_twisted.ensureDeferred
async def test_no_key_is_401_before_path_and_method_checks(rest, method, path):
    status, body = await rest.call(method, path, key="")
    assert_error(status, body, 401)


# -- devices --------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_create_device_fields(rest):
    before = now_ms()
    status, body = await rest.post("/api/device", {"name": "thermo-1", "type": "default", "label": "Kitchen"})
    after = now_ms()
    assert status == 200, body
    assert set(body) == {"id", "name", "type", "label", "createdTime", "customerId"}
    assert body["id"]["entityType"] == "DEVICE"
    assert str(uuid.UUID(body["id"]["id"])) == body["id"]["id"]
    assert body["name"] == "thermo-1"
    assert body["type"] == "default"
    assert body["label"] == "Kitchen"
    assert body["customerId"] is None
    assert type(body["createdTime"]) is int
    assert before - 1000 <= body["createdTime"] <= after + 1000
    status, again = await rest.get(f"/api/device/{dev_id(body)}")
    assert (status, again) == (200, body)


@pytest_twisted.ensureDeferred
async def test_create_device_defaults(rest):
    body = await create(rest, "bare")
    assert body["type"] == "default"
    assert body["label"] is None
    assert body["customerId"] is None


@pytest_twisted.ensureDeferred
async def test_create_device_generates_a_working_token(rest, coap):
    body = await create(rest, "gen")
    status, creds = await rest.get(f"/api/device/{dev_id(body)}/credentials")
    assert status == 200
    token = creds["credentialsId"]
    assert isinstance(token, str) and len(token) >= 10
    answer = await post_telemetry(coap, token, {"x": 1})
    assert answer.code == CREATED


@pytest_twisted.ensureDeferred
async def test_chosen_token_works_over_coap(rest, coap):
    body = await create(rest, "chosen", token="MY-TOKEN-7")
    status, creds = await rest.get(f"/api/device/{dev_id(body)}/credentials")
    assert status == 200
    assert creds["credentialsType"] == "ACCESS_TOKEN"
    assert creds["credentialsId"] == "MY-TOKEN-7"
    answer = await post_telemetry(coap, "MY-TOKEN-7", {"temp": 20})
    assert answer.code == CREATED
    status, latest = await rest.get(f"{TEL}/{dev_id(body)}/values/timeseries?keys=temp")
    assert status == 200 and latest["temp"][0]["value"] == "20"
    answer = await post_telemetry(coap, "OTHER-TOKEN", {"temp": 20})
    assert answer.code == UNAUTHORIZED


@pytest_twisted.ensureDeferred
async def test_duplicate_name_is_400(rest, device):
    status, body = await rest.post("/api/device", {"name": "dev-1"})
    assert_error(status, body, 400)
    status, page = await rest.get("/api/tenant/devices?pageSize=10&page=0")
    assert page["totalElements"] == 1


@pytest_twisted.ensureDeferred
async def test_duplicate_token_is_400(rest, device, coap):
    status, body = await rest.post("/api/device?accessToken=TOKEN-1", {"name": "dev-2"})
    assert_error(status, body, 400)
    status, body = await rest.get("/api/tenant/devices?deviceName=dev-2")
    assert_error(status, body, 404)
    # the token still belongs to dev-1
    assert (await post_telemetry(coap, "TOKEN-1", {"a": 1})).code == CREATED
    status, keys = await rest.get(f"{TEL}/{dev_id(device)}/keys/timeseries")
    assert keys == ["a"]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   "}, {"name": None}, {"name": 12},
                                  {"type": "default"}, {"name": "x" * 256},
                                  {"name": "ok", "type": 5}, {"name": "ok", "label": 5}])
@pytest_twisted.ensureDeferred
async def test_missing_or_empty_name_is_400(rest, body):
    status, answer = await rest.post("/api/device", body)
    assert_error(status, answer, 400)
    status, page = await rest.get("/api/tenant/devices?pageSize=10&page=0")
    assert page["totalElements"] == 0


@pytest.mark.parametrize("raw", [b"{", b"name=x", b"\xff\xfe", b""])
@pytest_twisted.ensureDeferred
async def test_create_body_not_json_is_400(rest, raw):
    status, answer = await rest.call("POST", "/api/device", raw=raw)
    assert_error(status, answer, 400)


@pytest.mark.parametrize("raw", [b"[]", b'["dev"]', b'"dev"', b"42", b"null", b"true"])
@pytest_twisted.ensureDeferred
async def test_create_body_not_an_object_is_400(rest, raw):
    status, answer = await rest.call("POST", "/api/device", raw=raw)
    assert_error(status, answer, 400)


@pytest.mark.parametrize("token", ["a/b", "x" * 256])
@pytest_twisted.ensureDeferred
async def test_create_with_unusable_token_is_400(rest, token):
    status, answer = await rest.post(f"/api/device?accessToken={token}", {"name": "bad-token"})
    assert_error(status, answer, 400)


@pytest_twisted.ensureDeferred
async def test_unicode_names(rest):
    body = await create(rest, "Gerät-ü 1", label="Küche")
    assert body["name"] == "Gerät-ü 1" and body["label"] == "Küche"
    status, found = await rest.get(f"/api/device/{dev_id(body)}")
    assert (status, found) == (200, body)


@pytest_twisted.ensureDeferred
async def test_non_ascii_query_values(rest, coap):
    body = await create(rest, "Gerät-ü 1")
    status, found = await rest.get("/api/tenant/devices?deviceName=Ger%C3%A4t-%C3%BC%201")
    assert (status, found) == (200, body)
    status, latest = await rest.get(f"{TEL}/{dev_id(body)}/values/timeseries?keys=temp%C3%A4")
    assert (status, latest) == (200, {})
    status, other = await rest.post("/api/device?accessToken=T%C3%B6k", {"name": "tok"})
    assert status == 200, other
    status, creds = await rest.get(f"/api/device/{dev_id(other)}/credentials")
    assert creds["credentialsId"] == "Tök"
    assert (await post_telemetry(coap, "Tök", {"a": 1})).code == CREATED


@pytest_twisted.ensureDeferred
async def test_get_unknown_device_is_404(rest):
    status, body = await rest.get(f"/api/device/{uuid.uuid4()}")
    assert_error(status, body, 404)
    status, body = await rest.get("/api/device/not-a-uuid")
    assert_error(status, body, 404)


@pytest_twisted.ensureDeferred
async def test_delete_unknown_device_is_404(rest):
    status, body = await rest.delete(f"/api/device/{uuid.uuid4()}")
    assert_error(status, body, 404)


@pytest_twisted.ensureDeferred
async def test_delete_device(rest, device, coap, node):
    did = dev_id(device)
    assert (await post_telemetry(coap, "TOKEN-1", {"t": 1})).code == CREATED  # the token is now cached
    answer = await coap.request(POST, "/api/v1/TOKEN-1/attributes", b'{"fw":"1.0"}')
    assert answer.code == CREATED
    status, _ = await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"k": 1})
    assert status == 200

    status, body = await rest.delete(f"/api/device/{did}")
    assert status == 200, body

    status, body = await rest.get(f"/api/device/{did}")
    assert_error(status, body, 404)
    status, body = await rest.delete(f"/api/device/{did}")
    assert_error(status, body, 404)
    status, body = await rest.get(f"/api/device/{did}/credentials")
    assert_error(status, body, 404)
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries")
    assert_error(status, body, 404)
    status, body = await rest.get("/api/tenant/devices?deviceName=dev-1")
    assert_error(status, body, 404)

    # the token is refused at once, also for a request that was cached
    answer = await post_telemetry(coap, "TOKEN-1", {"t": 2})
    assert answer.code == UNAUTHORIZED
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes")
    assert answer.code == UNAUTHORIZED

    # its data is gone from the store
    assert await node.core.telemetry.latest(did) == {}
    assert await node.core.telemetry.keys(did) == []
    for scope in ("CLIENT_SCOPE", "SHARED_SCOPE"):
        assert await node.core.store.get_attributes(did, scope, None) == {}

    # name and token are free again, and the new device starts empty
    again = await create(rest, "dev-1", token="TOKEN-1")
    assert dev_id(again) != did
    status, latest = await rest.get(f"{TEL}/{dev_id(again)}/values/timeseries")
    assert (status, latest) == (200, {})
    status, attrs = await rest.get(f"{TEL}/{dev_id(again)}/values/attributes/SHARED_SCOPE")
    assert (status, attrs) == (200, [])


# -- credentials ------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_get_credentials(rest, device):
    status, body = await rest.get(f"/api/device/{dev_id(device)}/credentials")
    assert status == 200
    assert body["credentialsType"] == "ACCESS_TOKEN"
    assert body["credentialsId"] == "TOKEN-1"


@pytest_twisted.ensureDeferred
async def test_credentials_of_unknown_device_is_404(rest):
    status, body = await rest.get(f"/api/device/{uuid.uuid4()}/credentials")
    assert_error(status, body, 404)


@pytest_twisted.ensureDeferred
async def test_rotate_token(rest, device, coap):
    did = dev_id(device)
    assert (await post_telemetry(coap, "TOKEN-1", {"t": 1})).code == CREATED  # cached now
    status, body = await rest.post("/api/device/credentials", {
        "deviceId": {"entityType": "DEVICE", "id": did}, "credentialsType": "ACCESS_TOKEN",
        "credentialsId": "TOKEN-NEW"})
    assert status == 200, body
    assert body["credentialsType"] == "ACCESS_TOKEN"
    assert body["credentialsId"] == "TOKEN-NEW"

    answer = await post_telemetry(coap, "TOKEN-1", {"t": 2})
    assert answer.code == UNAUTHORIZED
    answer = await post_telemetry(coap, "TOKEN-NEW", {"t": 3})
    assert answer.code == CREATED

    status, creds = await rest.get(f"/api/device/{did}/credentials")
    assert creds["credentialsId"] == "TOKEN-NEW"
    status, latest = await rest.get(f"{TEL}/{did}/values/timeseries?keys=t")
    assert latest["t"][0]["value"] == "3"

    # the old token is free for another device
    other = await create(rest, "dev-2", token="TOKEN-1")
    assert (await post_telemetry(coap, "TOKEN-1", {"o": 1})).code == CREATED
    status, keys = await rest.get(f"{TEL}/{dev_id(other)}/keys/timeseries")
    assert keys == ["o"]


@pytest_twisted.ensureDeferred
async def test_rotate_to_the_same_token(rest, device, coap):
    status, body = await rest.post("/api/device/credentials", {
        "deviceId": {"id": dev_id(device)}, "credentialsType": "ACCESS_TOKEN", "credentialsId": "TOKEN-1"})
    assert status == 200, body
    assert (await post_telemetry(coap, "TOKEN-1", {"a": 1})).code == CREATED


@pytest_twisted.ensureDeferred
async def test_rotate_to_a_token_of_another_device_is_400(rest, device, coap):
    other = await create(rest, "dev-2", token="TOKEN-2")
    status, body = await rest.post("/api/device/credentials", {
        "deviceId": {"id": dev_id(device)}, "credentialsType": "ACCESS_TOKEN", "credentialsId": "TOKEN-2"})
    assert_error(status, body, 400)
    status, creds = await rest.get(f"/api/device/{dev_id(device)}/credentials")
    assert creds["credentialsId"] == "TOKEN-1"
    status, creds = await rest.get(f"/api/device/{dev_id(other)}/credentials")
    assert creds["credentialsId"] == "TOKEN-2"
    assert (await post_telemetry(coap, "TOKEN-1", {"a": 1})).code == CREATED


@pytest.mark.parametrize("body", [
    {"credentialsType": "ACCESS_TOKEN", "credentialsId": "X"},
    {"deviceId": "id-as-string", "credentialsType": "ACCESS_TOKEN", "credentialsId": "X"},
    {"deviceId": {"id": "__DEV__"}, "credentialsType": "X509_CERTIFICATE", "credentialsId": "X"},
    {"deviceId": {"id": "__DEV__"}, "credentialsType": "ACCESS_TOKEN"},
    {"deviceId": {"id": "__DEV__"}, "credentialsType": "ACCESS_TOKEN", "credentialsId": ""},
    {"deviceId": {"id": "__DEV__"}, "credentialsType": "ACCESS_TOKEN", "credentialsId": 5},
    {"deviceId": {"id": "__DEV__"}, "credentialsType": "ACCESS_TOKEN", "credentialsId": "a/b"},
])
@pytest_twisted.ensureDeferred
async def test_rotate_malformed_is_400(rest, device, coap, body):
    body = json.loads(json.dumps(body).replace("__DEV__", dev_id(device)))
    status, answer = await rest.post("/api/device/credentials", body)
    assert_error(status, answer, 400)
    assert (await post_telemetry(coap, "TOKEN-1", {"a": 1})).code == CREATED


@pytest_twisted.ensureDeferred
async def test_rotate_not_json_is_400(rest, device):
    status, answer = await rest.call("POST", "/api/device/credentials", raw=b"{nope")
    assert_error(status, answer, 400)


@pytest_twisted.ensureDeferred
async def test_rotate_unknown_device_is_404(rest):
    status, answer = await rest.post("/api/device/credentials", {
        "deviceId": {"id": str(uuid.uuid4())}, "credentialsType": "ACCESS_TOKEN", "credentialsId": "Z"})
    assert_error(status, answer, 404)


# -- tenant devices -----------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_tenant_devices_paging(rest):
    created = {}
    for i in range(5):
        body = await create(rest, f"pg-{i}")
        created[body["name"]] = body
    seen = []
    expected = [(2, True), (2, True), (1, False)]
    for page, (size, has_next) in enumerate(expected):
        status, body = await rest.get(f"/api/tenant/devices?pageSize=2&page={page}")
        assert status == 200, body
        assert set(body) == {"data", "totalPages", "totalElements", "hasNext"}
        assert body["totalPages"] == 3
        assert body["totalElements"] == 5
        assert body["hasNext"] is has_next
        assert len(body["data"]) == size
        for item in body["data"]:
            assert item == created[item["name"]]
        seen += [item["name"] for item in body["data"]]
    assert sorted(seen) == sorted(created)  # every device once, none twice

    status, body = await rest.get("/api/tenant/devices?pageSize=2&page=3")
    assert status == 200
    assert body["data"] == [] and body["hasNext"] is False and body["totalElements"] == 5
    status, body = await rest.get("/api/tenant/devices?pageSize=5&page=0")
    assert body["totalPages"] == 1 and body["hasNext"] is False and len(body["data"]) == 5
    status, body = await rest.get("/api/tenant/devices?pageSize=100")  # page defaults to 0
    assert status == 200 and len(body["data"]) == 5


@pytest_twisted.ensureDeferred
async def test_tenant_devices_empty(rest):
    status, body = await rest.get("/api/tenant/devices?pageSize=10&page=0")
    assert (status, body) == (200, {"data": [], "totalPages": 0, "totalElements": 0, "hasNext": False})


@pytest.mark.parametrize("query", ["", "?page=0", "?pageSize=0", "?pageSize=-1", "?pageSize=x",
                                   "?pageSize=2&page=-1", "?pageSize=2&page=x"])
@pytest_twisted.ensureDeferred
async def test_tenant_devices_bad_paging_is_400(rest, query):
    status, body = await rest.get("/api/tenant/devices" + query)
    assert_error(status, body, 400)


@pytest_twisted.ensureDeferred
async def test_tenant_devices_by_name(rest, device):
    await create(rest, "dev-2")
    status, body = await rest.get("/api/tenant/devices?deviceName=dev-1")
    assert (status, body) == (200, device)
    status, body = await rest.get("/api/tenant/devices?deviceName=nope")
    assert_error(status, body, 404)
    status, body = await rest.get("/api/tenant/devices?deviceName=dev")
    assert_error(status, body, 404)


# -- time series --------------------------------------------------------------------

MIXED = b'{"d":21.5,"l":42,"b":true,"s":"x","big":1e20,"j":{"a":1}}'


@pytest_twisted.ensureDeferred
async def test_timeseries_keys(rest, device, coap):
    did = dev_id(device)
    status, body = await rest.get(f"{TEL}/{did}/keys/timeseries")
    assert (status, body) == (200, [])
    assert (await post_telemetry(coap, "TOKEN-1", MIXED)).code == CREATED
    status, body = await rest.get(f"{TEL}/{did}/keys/timeseries")
    assert status == 200
    assert sorted(body) == ["b", "big", "d", "j", "l", "s"]
    assert len(body) == 6


@pytest_twisted.ensureDeferred
async def test_telemetry_calls_on_unknown_device_are_404(rest):
    for path in ("keys/timeseries", "values/timeseries", "values/timeseries?startTs=0&endTs=10",
                 "values/attributes", "values/attributes/SHARED_SCOPE", "keys/attributes"):
        status, body = await rest.get(f"{TEL}/{uuid.uuid4()}/{path}")
        assert_error(status, body, 404)
    status, body = await rest.post(f"{TEL}/{uuid.uuid4()}/SHARED_SCOPE", {"k": 1})
    assert_error(status, body, 404)
    status, body = await rest.delete(f"{TEL}/{uuid.uuid4()}/SHARED_SCOPE?keys=k")
    assert_error(status, body, 404)


@pytest_twisted.ensureDeferred
async def test_latest_values_as_strings(rest, device, coap):
    did = dev_id(device)
    before = now_ms()
    assert (await post_telemetry(coap, "TOKEN-1", MIXED)).code == CREATED
    after = now_ms()
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries")
    assert status == 200
    values = {key: points[0]["value"] for key, points in body.items()}
    assert values == {
        "d": "21.5",
        "l": "42",
        "b": "true",
        "s": "x",
        "big": "1e20",  # integral, beyond 64 bits: STRING of its literal 
        "j": '{"a":1}',
    }
    for key, points in body.items():
        assert len(points) == 1
        assert set(points[0]) == {"ts", "value"}
        assert type(points[0]["ts"]) is int and before - 1000 <= points[0]["ts"] <= after + 1000


@pytest_twisted.ensureDeferred
async def test_latest_values_selected_keys(rest, device, coap):
    did = dev_id(device)
    assert (await post_telemetry(coap, "TOKEN-1", MIXED)).code == CREATED
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries?keys=d,l")
    assert status == 200
    assert sorted(body) == ["d", "l"]
    assert body["d"][0]["value"] == "21.5" and body["l"][0]["value"] == "42"
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries?keys=")  # empty: every key
    assert sorted(body) == ["b", "big", "d", "j", "l", "s"]


@pytest_twisted.ensureDeferred
async def test_double_string_form_is_python_repr(rest, device, coap):
    did = dev_id(device)
    payload = (b'{"f0":42.0,"f1":1.25e1,"f2":100000000000000000000.0,"f3":"21.5","f4":0.1,'
               b'"f5":-0.5,"f6":1.5e-7,"s7":1.5e300,"i1":1e2,"i2":4.2e1,"i3":"0042","i4":"-0","i5":-7,'
               b'"s1":"1e3","s2":"1.","s3":".5","s4":"+1","s5":"99999999999999999999",'
               b'"s6":99999999999999999999}')
    assert (await post_telemetry(coap, "TOKEN-1", payload)).code == CREATED
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries")
    assert status == 200
    values = {key: points[0]["value"] for key, points in body.items()}
    assert values == {
        "f0": "42.0", "f1": "12.5", "f2": "1e+20", "f3": "21.5", "f4": "0.1", "f5": "-0.5",
        "f6": "1.5e-07", "s7": "1.5e300",  # integral beyond 64 bits: STRING
        "i1": "100", "i2": "42", "i3": "42", "i4": "0", "i5": "-7",
        "s1": "1e3", "s2": "1.", "s3": ".5", "s4": "+1", "s5": "99999999999999999999",
        "s6": "99999999999999999999",
    }


@pytest_twisted.ensureDeferred
async def test_latest_values_strict_types(rest, device, coap):
    did = dev_id(device)
    assert (await post_telemetry(coap, "TOKEN-1", MIXED)).code == CREATED
    assert (await post_telemetry(coap, "TOKEN-1", b'{"f":42.0,"n":"0042"}')).code == CREATED
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries?useStrictDataTypes=true")
    assert status == 200
    values = {key: points[0]["value"] for key, points in body.items()}
    assert values == {"d": 21.5, "l": 42, "b": True, "s": "x", "big": "1e20", "j": {"a": 1}, "f": 42.0, "n": 42}
    assert type(values["d"]) is float and type(values["f"]) is float
    assert type(values["l"]) is int and type(values["n"]) is int
    assert values["b"] is True
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries?useStrictDataTypes=false")
    assert body["f"][0]["value"] == "42.0" and body["b"][0]["value"] == "true"


@pytest_twisted.ensureDeferred
async def test_latest_is_the_newest_point(rest, device, coap):
    did = dev_id(device)
    payload = b'[{"ts":2000,"values":{"t":2}},{"ts":3000,"values":{"t":3}},{"ts":1000,"values":{"t":1}}]'
    assert (await post_telemetry(coap, "TOKEN-1", payload)).code == CREATED
    status, body = await rest.get(f"{TEL}/{did}/values/timeseries?keys=t")
    assert (status, body) == (200, {"t": [{"ts": 3000, "value": "3"}]})


HISTORY = b'[{"ts":1000,"values":{"t":1}},{"ts":2000,"values":{"t":2}},{"ts":3000,"values":{"t":3}}]'


async def history_device(rest, device, coap):
    assert (await post_telemetry(coap, "TOKEN-1", HISTORY)).code == CREATED
    assert (await post_telemetry(coap, "TOKEN-1", b'{"ts":2000,"values":{"u":"two"}}')).code == CREATED
    return f"{TEL}/{dev_id(device)}/values/timeseries"


def points(body, key="t"):
    return [(p["ts"], p["value"]) for p in body[key]]


@pytest_twisted.ensureDeferred
async def test_history_range_default_desc(rest, device, coap):
    url = await history_device(rest, device, coap)
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000")
    assert status == 200
    assert points(body) == [(3000, "3"), (2000, "2"), (1000, "1")]  # DESC by default
    status, body = await rest.get(url + "?keys=t&startTs=1500&endTs=2500")
    assert points(body) == [(2000, "2")]
    status, body = await rest.get(url + "?keys=t&startTs=1000&endTs=2000")  # both ends inclusive
    assert points(body) == [(2000, "2"), (1000, "1")]
    status, body = await rest.get(url + "?keys=t&startTs=2000&endTs=3000")
    assert points(body) == [(3000, "3"), (2000, "2")]
    status, body = await rest.get(url + "?keys=t&startTs=3001&endTs=9000")
    assert status == 200 and body.get("t", []) == []


@pytest_twisted.ensureDeferred
async def test_history_every_key_without_keys(rest, device, coap):
    url = await history_device(rest, device, coap)
    status, body = await rest.get(url + "?startTs=0&endTs=5000")
    assert status == 200
    assert sorted(body) == ["t", "u"]
    assert points(body, "u") == [(2000, "two")]
    status, body = await rest.get(url + "?keys=u&startTs=0&endTs=5000")
    assert sorted(body) == ["u"]


@pytest_twisted.ensureDeferred
async def test_history_limit_and_order(rest, device, coap):
    url = await history_device(rest, device, coap)
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&limit=2")
    assert points(body) == [(3000, "3"), (2000, "2")]
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&limit=2&orderBy=DESC")
    assert points(body) == [(3000, "3"), (2000, "2")]
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&limit=2&orderBy=ASC")
    assert points(body) == [(1000, "1"), (2000, "2")]
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&orderBy=ASC")
    assert points(body) == [(1000, "1"), (2000, "2"), (3000, "3")]
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&limit=1")
    assert points(body) == [(3000, "3")]
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&limit=100000")
    assert status == 200 and len(body["t"]) == 3


@pytest_twisted.ensureDeferred
async def test_history_default_limit_is_100(rest, device, coap):
    payload = json.dumps([{"ts": 1000 + i, "values": {"n": i}} for i in range(150)])
    assert (await post_telemetry(coap, "TOKEN-1", payload)).code == CREATED
    url = f"{TEL}/{dev_id(device)}/values/timeseries"
    status, body = await rest.get(url + "?keys=n&startTs=0&endTs=10000")
    assert status == 200 and len(body["n"]) == 100
    assert body["n"][0] == {"ts": 1149, "value": "149"}
    status, body = await rest.get(url + "?keys=n&startTs=0&endTs=10000&limit=150")
    assert len(body["n"]) == 150


@pytest_twisted.ensureDeferred
async def test_history_strict_types(rest, device, coap):
    url = await history_device(rest, device, coap)
    status, body = await rest.get(url + "?startTs=0&endTs=5000&orderBy=ASC&useStrictDataTypes=true")
    assert status == 200
    assert points(body) == [(1000, 1), (2000, 2), (3000, 3)]
    assert all(type(v) is int for _, v in points(body))
    assert points(body, "u") == [(2000, "two")]


@pytest.mark.parametrize("query", [
    "startTs=0&endTs=5000&limit=100001",
    "startTs=0&endTs=5000&limit=1000000",
    "startTs=0&endTs=5000&limit=0",
    "startTs=0&endTs=5000&limit=x",
    "startTs=abc&endTs=5000",
    "startTs=1.5&endTs=5000",
    "startTs=0&endTs=5e3",
    "startTs=0&endTs=",
    "endTs=5000",
    "startTs=0",
    "startTs=0&endTs=5000&agg=AVG",                     # no interval
    "startTs=0&endTs=5000&agg=SUM&interval=0",
    "startTs=0&endTs=5000&agg=MEDIAN&interval=1000",
    "startTs=0&endTs=100000001&agg=SUM&interval=1000",  # over 100,000 buckets
    "agg=MAX&interval=1000",
    "startTs=0&endTs=5000&orderBy=SIDEWAYS",
])
@pytest_twisted.ensureDeferred
async def test_history_bad_query_is_400(rest, device, coap, query):
    url = await history_device(rest, device, coap)
    status, body = await rest.get(url + "?keys=t&" + query)
    assert_error(status, body, 400)


@pytest.mark.parametrize("path", ["values/timeseries", "values/timeseries/history"])
@pytest_twisted.ensureDeferred
async def test_aggregated_history(rest, device, path):
    base = f"{TEL}/{dev_id(device)}"
    status, _ = await rest.post(f"{base}/timeseries/ANY", [{"ts": 1000 * n, "values": {"t": n}} for n in range(10)])
    assert status == 200
    status, body = await rest.get(f"{base}/{path}?keys=t&startTs=0&endTs=10000&interval=5000&agg=AVG&orderBy=ASC")
    assert status == 200 and body == {"t": [{"ts": 2500, "value": "2.0"}, {"ts": 7500, "value": "7.0"}]}
    status, body = await rest.get(f"{base}/{path}?keys=t&startTs=0&endTs=10000&interval=5000&agg=SUM"
                                  "&useStrictDataTypes=true")  # DESC unless asked: the newest bucket first
    assert body == {"t": [{"ts": 7500, "value": 35}, {"ts": 2500, "value": 10}]}
    status, body = await rest.get(f"{base}/{path}?keys=t&startTs=0&endTs=10000&interval=3000&agg=COUNT&limit=2"
                                  "&orderBy=ASC&useStrictDataTypes=true")
    assert body == {"t": [{"ts": 1500, "value": 3}, {"ts": 4500, "value": 3}]}


@pytest_twisted.ensureDeferred
async def test_history_agg_none_is_accepted(rest, device, coap):
    url = await history_device(rest, device, coap)
    status, body = await rest.get(url + "?keys=t&startTs=0&endTs=5000&agg=NONE")
    assert status == 200 and len(body["t"]) == 3


# -- attributes ----------------------------------------------------------------------

TYPED = {"s": "text", "n": 7, "f": 2.5, "b": False, "j": {"a": [1, 2]}}


def by_key(body):
    return {item["key"]: item["value"] for item in body}


@pytest.mark.parametrize("form", ["{scope}", "attributes/{scope}"])
@pytest.mark.parametrize("scope", ["SHARED_SCOPE", "SERVER_SCOPE"])
@pytest_twisted.ensureDeferred
async def test_post_attributes(rest, device, scope, form):
    did = dev_id(device)
    before = now_ms()
    status, body = await rest.post(f"{TEL}/{did}/" + form.format(scope=scope), TYPED)
    after = now_ms()
    assert status == 200, body
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/{scope}")
    assert status == 200
    mine = [item for item in body if item["key"] in TYPED]
    assert len(mine) == len(TYPED)
    for item in mine:
        assert set(item) == {"key", "value", "lastUpdateTs"}
        assert type(item["lastUpdateTs"]) is int and before - 1000 <= item["lastUpdateTs"] <= after + 1000
    values = by_key(mine)
    assert values == TYPED
    assert type(values["f"]) is float and type(values["n"]) is int and values["b"] is False
    # the other writable scope is untouched
    other = "SERVER_SCOPE" if scope == "SHARED_SCOPE" else "SHARED_SCOPE"
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/{other}")
    assert not set(by_key(body)) & set(TYPED)


@pytest_twisted.ensureDeferred
async def test_post_attributes_overwrites_and_skips_null(rest, device):
    did = dev_id(device)
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"k": 1, "m": "a"}))[0] == 200
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"k": 2, "z": None}))[0] == 200
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE")
    assert by_key(body) == {"k": 2, "m": "a"}


@pytest.mark.parametrize("path", ["CLIENT_SCOPE", "attributes/CLIENT_SCOPE", "BOGUS_SCOPE",
                                  "attributes/BOGUS", "shared_scope"])
@pytest_twisted.ensureDeferred
async def test_post_attributes_to_unwritable_scope_is_400(rest, device, path):
    did = dev_id(device)
    status, body = await rest.post(f"{TEL}/{did}/{path}", {"k": 1})
    assert_error(status, body, 400)
    status, body = await rest.get(f"{TEL}/{did}/values/attributes")
    assert "k" not in by_key(body)


@pytest.mark.parametrize("raw", [b"{", b"[1,2]", b'"x"', b"", b'{"a":1,"a":2}', b'{"":1}', b'{"x":NaN}'])
@pytest_twisted.ensureDeferred
async def test_post_attributes_malformed_is_400(rest, device, raw):
    did = dev_id(device)
    status, body = await rest.call("POST", f"{TEL}/{did}/SHARED_SCOPE", raw=raw)
    assert_error(status, body, 400)
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE")
    assert (status, body) == (200, [])


@pytest_twisted.ensureDeferred
async def test_attribute_values_with_keys(rest, device):
    did = dev_id(device)
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"a": 1, "b": "two", "c": True}))[0] == 200
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE?keys=a,c")
    assert status == 200
    assert [(item["key"], item["value"]) for item in sorted(body, key=lambda i: i["key"])] == [("a", 1), ("c", True)]
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE?keys=nope")
    assert (status, body) == (200, [])


@pytest_twisted.ensureDeferred
async def test_client_attributes_from_coap(rest, device, coap):
    did = dev_id(device)
    answer = await coap.request(POST, "/api/v1/TOKEN-1/attributes", b'{"fw":"1.0.2","n":5,"r":"21.5","on":true}')
    assert answer.code == CREATED
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/CLIENT_SCOPE")
    assert status == 200
    assert by_key(body) == {"fw": "1.0.2", "n": 5, "r": 21.5, "on": True}
    assert type(by_key(body)["r"]) is float
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/CLIENT_SCOPE?keys=fw")
    assert [(i["key"], i["value"]) for i in body] == [("fw", "1.0.2")]
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE")
    assert "fw" not in by_key(body)


@pytest_twisted.ensureDeferred
async def test_attribute_values_of_every_scope(rest, device, coap):
    did = dev_id(device)
    assert (await coap.request(POST, "/api/v1/TOKEN-1/attributes", b'{"c":1}')).code == CREATED
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"sh": 2}))[0] == 200
    assert (await rest.post(f"{TEL}/{did}/SERVER_SCOPE", {"sv": 3}))[0] == 200
    status, body = await rest.get(f"{TEL}/{did}/values/attributes")
    assert status == 200
    values = by_key(body)
    assert {k: values[k] for k in ("c", "sh", "sv")} == {"c": 1, "sh": 2, "sv": 3}
    status, body = await rest.get(f"{TEL}/{did}/values/attributes?keys=sh")
    assert by_key(body) == {"sh": 2}


@pytest_twisted.ensureDeferred
async def test_attribute_keys(rest, device, coap):
    did = dev_id(device)
    assert (await coap.request(POST, "/api/v1/TOKEN-1/attributes", b'{"c":1}')).code == CREATED
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"sh": 2, "x": 1}))[0] == 200
    status, body = await rest.get(f"{TEL}/{did}/keys/attributes/SHARED_SCOPE")
    assert (status, sorted(body)) == (200, ["sh", "x"])
    status, body = await rest.get(f"{TEL}/{did}/keys/attributes/CLIENT_SCOPE")
    assert (status, body) == (200, ["c"])
    status, body = await rest.get(f"{TEL}/{did}/keys/attributes")
    assert status == 200 and {"c", "sh", "x"} <= set(body)
    status, body = await rest.get(f"{TEL}/{did}/keys/attributes/NOPE")
    assert_error(status, body, 400)


@pytest.mark.parametrize("scope", ["NOPE", "client_scope", "TELEMETRY"])
@pytest_twisted.ensureDeferred
async def test_attribute_values_unknown_scope_is_400(rest, device, scope):
    status, body = await rest.get(f"{TEL}/{dev_id(device)}/values/attributes/{scope}")
    assert_error(status, body, 400)


@pytest_twisted.ensureDeferred
async def test_delete_attributes(rest, device, coap):
    did = dev_id(device)
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"a": 1, "b": 2, "c": 3}))[0] == 200
    assert (await rest.post(f"{TEL}/{did}/SERVER_SCOPE", {"a": 10}))[0] == 200
    status, body = await rest.delete(f"{TEL}/{did}/SHARED_SCOPE?keys=a,b")
    assert status == 200, body
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE")
    assert by_key(body) == {"c": 3}
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SERVER_SCOPE?keys=a")
    assert by_key(body) == {"a": 10}  # other scopes untouched
    # the device no longer gets them
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes", query=["sharedKeys=a,b,c"])
    assert answer.code == CONTENT
    assert json.loads(answer.payload) == {"shared": {"c": 3}}
    # deleting a key that does not exist is fine
    status, body = await rest.delete(f"{TEL}/{did}/SHARED_SCOPE?keys=zzz")
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_delete_client_attributes(rest, device, coap):
    did = dev_id(device)
    assert (await coap.request(POST, "/api/v1/TOKEN-1/attributes", b'{"c":1,"d":2}')).code == CREATED
    status, body = await rest.delete(f"{TEL}/{did}/CLIENT_SCOPE?keys=c")
    assert status == 200, body
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/CLIENT_SCOPE")
    assert by_key(body) == {"d": 2}


@pytest.mark.parametrize("query", ["", "?keys=", "?keys=,", "?other=a"])
@pytest_twisted.ensureDeferred
async def test_delete_attributes_without_keys_is_400(rest, device, query):
    did = dev_id(device)
    assert (await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"a": 1}))[0] == 200
    status, body = await rest.delete(f"{TEL}/{did}/SHARED_SCOPE{query}")
    assert_error(status, body, 400)
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SHARED_SCOPE")
    assert by_key(body) == {"a": 1}


@pytest_twisted.ensureDeferred
async def test_delete_attributes_unknown_scope_is_400(rest, device):
    status, body = await rest.delete(f"{TEL}/{dev_id(device)}/NOPE_SCOPE?keys=a")
    assert_error(status, body, 400)


@pytest_twisted.ensureDeferred
async def test_server_scope_activity(rest, device, coap):
    did = dev_id(device)
    before = now_ms()
    assert (await post_telemetry(coap, "TOKEN-1", {"t": 1})).code == CREATED
    after = now_ms()
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SERVER_SCOPE")
    assert status == 200
    values = by_key(body)
    assert values["active"] is True
    last = values["lastActivityTime"]
    assert type(last) is int
    assert before - 1000 <= last <= after + 1000
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SERVER_SCOPE?keys=active")
    assert by_key(body) == {"active": True}
    # a later request moves lastActivityTime on
    from twisted.internet import reactor, task
    await task.deferLater(reactor, 0.01, lambda: None)
    assert (await coap.request(GET, "/api/v1/TOKEN-1/attributes")).code in (CONTENT, 132)
    status, body = await rest.get(f"{TEL}/{did}/values/attributes/SERVER_SCOPE?keys=lastActivityTime")
    assert by_key(body)["lastActivityTime"] > last


@pytest_twisted.ensureDeferred
async def test_shared_attributes_reach_the_device(rest, device, coap):
    did = dev_id(device)
    status, _ = await rest.post(f"{TEL}/{did}/SHARED_SCOPE", {"k": "v", "n": 3, "f": 1.5, "o": {"x": [1]}})
    assert status == 200
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes", query=["sharedKeys=k"])
    assert answer.code == CONTENT
    assert answer.opt.content_format == JSON_FORMAT
    assert json.loads(answer.payload) == {"shared": {"k": "v"}}
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes", query=["sharedKeys=k,n,f,o"])
    assert answer.code == CONTENT
    assert json.loads(answer.payload) == {"shared": {"k": "v", "n": 3, "f": 1.5, "o": {"x": [1]}}}
    # SERVER_SCOPE attributes are not the device's business
    assert (await rest.post(f"{TEL}/{did}/SERVER_SCOPE", {"secret": 1}))[0] == 200
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes")
    assert answer.code == CONTENT
    assert json.loads(answer.payload) == {"shared": {"k": "v", "n": 3, "f": 1.5, "o": {"x": [1]}}}


# -- admin ---------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_stats(rest, device, coap):
    status, before = await rest.get("/api/admin/stats")
    assert status == 200
    assert type(before["store"]["queueDepth"]) is int
    created_before = before["coap"].get("2.01", 0)
    unauthorized_before = before["coap"].get("4.01", 0)
    assert (await post_telemetry(coap, "TOKEN-1", {"t": 1})).code == CREATED
    assert (await post_telemetry(coap, "TOKEN-1", {"t": 2})).code == CREATED
    assert (await post_telemetry(coap, "NO-SUCH", {"t": 2})).code == UNAUTHORIZED
    status, after = await rest.get("/api/admin/stats")
    assert status == 200
    assert after["coap"]["2.01"] == created_before + 2
    assert after["coap"]["4.01"] == unauthorized_before + 1
    assert type(after["store"]["queueDepth"]) is int
    assert after["store"]["writes"] >= before["store"]["writes"] + 2  # the two telemetry commits


@pytest_twisted.ensureDeferred
async def test_plugins(rest):
    status, body = await rest.get("/api/admin/plugins")
    assert status == 200
    assert isinstance(body, list)
    for plugin in body:
        assert set(plugin) >= {"name", "version", "source", "hooks"}
        assert isinstance(plugin["hooks"], list)
    sqlite = [p for p in body if p["name"] == "sqlite"]
    assert len(sqlite) == 1, body
    assert "tbcoap_store_backends" in sqlite[0]["hooks"]
    assert all(h.startswith("tbcoap_") for h in sqlite[0]["hooks"])
    # the built-in token auth is a plugin too, with its hook
    assert any("tbcoap_authenticate" in p["hooks"] for p in body)
    # which of them this node uses: the store, the rules of --rules (echo by default), auth always
    active = {p["name"]: p["active"] for p in body}
    assert active["sqlite"] is True and active["echo"] is True and active["tbcoap.builtins"] is True


@pytest_twisted.ensureDeferred
async def test_device_list_searched_and_sorted(rest):
    for name in ("beta-Sensor", "alpha-sensor", "gamma-pump"):
        await create(rest, name)
    status, page = await rest.get("/api/tenant/devices?pageSize=10&page=0&textSearch=SENSOR&sortProperty=name")
    assert status == 200 and [d["name"] for d in page["data"]] == ["alpha-sensor", "beta-Sensor"]
    assert page["totalElements"] == 2
    status, page = await rest.get("/api/tenant/devices?pageSize=1&page=0&sortProperty=createdTime&sortOrder=DESC")
    assert [d["name"] for d in page["data"]] == ["gamma-pump"] and page["hasNext"] is True
    for bad in ("sortProperty=colour", "sortOrder=UP", "textSearch=%00", "textSearch=a%0Ab"):
        status, body = await rest.get(f"/api/tenant/devices?pageSize=10&page=0&{bad}")
        assert status == 400 and bad.partition("=")[0] in body["message"]


# -- token changes racing an authentication in flight ------------------------------


def hold_token_lookup(node, token):
    """Hold the store's answers to lookups of ``token`` until the returned release() is called.

    This is what a busy store (a full read pool, a slow Redis) does to a lookup that started
    before a token change was committed.
    """
    from twisted.internet import defer

    store = node.core.devices.store
    original = store.device_by_credentials
    gate = defer.Deferred()

    def device_by_credentials(kind, asked):
        d = original(kind, asked)
        if asked == token and not gate.called:
            held = defer.Deferred()
            d.addCallback(lambda device: gate.addCallback(lambda _: held.callback(device)))
            return held
        return d

    store.device_by_credentials = device_by_credentials
    return lambda: gate.callback(None)


async def settle(seconds=0.05):
    from tests.coapclient import deferLater

    await deferLater(seconds)


@pytest_twisted.ensureDeferred
async def test_rotation_during_a_slow_authentication_still_refuses_old_token(rest, device, coap, node):
    from twisted.internet import defer

    release = hold_token_lookup(node, "TOKEN-1")
    in_flight = defer.ensureDeferred(post_telemetry(coap, "TOKEN-1", {"t": 1}))  # sent before the rotation
    await settle()
    status, body = await rest.post("/api/device/credentials", {
        "deviceId": {"id": dev_id(device)}, "credentialsType": "ACCESS_TOKEN", "credentialsId": "TOKEN-NEW"})
    assert status == 200, body
    release()
    await in_flight  # whatever it got: it was sent before the rotation
    answer = await post_telemetry(coap, "TOKEN-1", {"t": 2})
    assert answer.code == UNAUTHORIZED


@pytest_twisted.ensureDeferred
async def test_delete_during_a_slow_authentication_still_refuses_token(rest, device, coap, node):
    from twisted.internet import defer

    release = hold_token_lookup(node, "TOKEN-1")
    in_flight = defer.ensureDeferred(post_telemetry(coap, "TOKEN-1", {"t": 1}))
    await settle()
    status, body = await rest.delete(f"/api/device/{dev_id(device)}")
    assert status == 200, body
    release()
    await in_flight
    answer = await post_telemetry(coap, "TOKEN-1", {"t": 2})
    assert answer.code == UNAUTHORIZED
