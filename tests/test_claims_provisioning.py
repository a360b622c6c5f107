"""Claiming and provisioning over CoAP, customers, roles, claiming and profiles over REST."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.coapclient import GET, POST, code_text
from tests.conftest import Rest

CLAIM = "/api/v1/TOKEN-1/claim"
PROVISION = "/api/v1/provision"


async def customer(rest, title="ACME"):
    status, body = await rest.post("/api/customer", {"title": title})
    assert status == 200 and body["id"]["entityType"] == "CUSTOMER" and body["title"] == title
    return body["id"]["id"], Rest(rest.base, key=body["apiKey"])


async def claim(as_customer, name, secret):
    return await as_customer.post(f"/api/customer/device/{name}/claim", {"secretKey": secret})


# -- customers and roles ----------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_who_a_key_is(rest):
    acme_id, acme = await customer(rest, "ACME")
    tenant = {"entityType": "TENANT", "id": "02e0fcad-2488-59c4-92fe-d8a4fc68c55a"}
    assert await rest.get("/api/auth/user") == (200, {"authority": "TENANT_ADMIN", "customerId": None,
                                                      "name": "admin", "email": "admin@tbcoap.invalid",
                                                      "tenantId": tenant})
    assert await acme.get("/api/auth/user") == (200, {"authority": "CUSTOMER_USER", "name": "ACME",
                                                      "customerId": {"entityType": "CUSTOMER", "id": acme_id},
                                                      "email": f"customer-{acme_id}@tbcoap.invalid",
                                                      "tenantId": tenant})
    assert (await acme.get("/api/auth/user", key="wrong"))[0] == 401


@pytest_twisted.ensureDeferred
async def test_customer_by_title_and_titles_are_unique(rest):
    acme_id, _ = await customer(rest, "ACME")
    status, found = await rest.get("/api/tenant/customers?customerTitle=ACME")
    assert status == 200 and found["id"]["id"] == acme_id and found["title"] == "ACME" and "apiKey" not in found
    assert (await rest.get("/api/tenant/customers?customerTitle=acme"))[0] == 404
    assert (await rest.get("/api/tenant/customers"))[0] == 400
    status, body = await rest.post("/api/customer", {"title": "ACME"})
    assert status == 400 and "ACME" in body["message"]


@pytest_twisted.ensureDeferred
async def test_customers_and_their_keys(rest, device):
    acme_id, acme = await customer(rest, "ACME")
    await customer(rest, "Other")
    status, page = await rest.get("/api/customers?pageSize=10&page=0")
    assert status == 200 and page["totalElements"] == 2
    assert sorted(c["title"] for c in page["data"]) == ["ACME", "Other"]  # created in one ms, maybe
    assert all("apiKey" not in c for c in page["data"])
    assert (await rest.post("/api/customer", {"title": ""}))[0] == 400
    assert (await rest.post("/api/customer", raw=b"[")) [0] == 400


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/tenant/devices?pageSize=10&page=0"), ("POST", "/api/device"), ("GET", "/api/customers"),
    ("POST", "/api/customer"), ("GET", "/api/admin/stats"), ("POST", "/api/deviceProfile"),
    ("GET", "/api/tenant/customers?customerTitle=ACME"), ("GET", "/api/admin/plugins"),
    ("GET", "/api/device/{id}/credentials"), ("POST", "/api/rpc/oneway/{id}"),
])
@pytest_twisted.ensureDeferred
async def test_customer_key_is_403_on_admin_calls(rest, device, method, path):
    _, acme = await customer(rest)
    status, body = await acme.call(method, path.replace("{id}", device["id"]["id"]), {"name": "x", "title": "y"})
    assert status == 403 and body["status"] == 403


@pytest_twisted.ensureDeferred
async def test_customer_reads_only_its_own_devices(node, coap, rest, device):
    acme_id, acme = await customer(rest)
    other_id, other = await customer(rest, "Other")
    device_id = device["id"]["id"]
    assert (await acme.get(f"/api/device/{device_id}"))[0] == 404
    await coap.request(POST, CLAIM, b'{"secretKey":"s"}')
    assert (await claim(acme, "dev-1", "s"))[0] == 200
    status, mine = await acme.get(f"/api/device/{device_id}")
    assert status == 200 and mine["customerId"] == {"entityType": "CUSTOMER", "id": acme_id}
    assert (await acme.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"))[0] == 200
    assert (await other.get(f"/api/device/{device_id}"))[0] == 404
    assert (await other.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"))[0] == 404
    status, page = await acme.get(f"/api/customer/{acme_id}/devices")
    assert status == 200 and [d["name"] for d in page["data"]] == ["dev-1"]
    assert (await acme.get(f"/api/customer/{other_id}/devices"))[0] == 404
    status, page = await acme.get(f"/api/customer/{acme_id}/devices?textSearch=DEV&sortProperty=name&sortOrder=DESC")
    assert status == 200 and [d["name"] for d in page["data"]] == ["dev-1"]
    status, page = await acme.get(f"/api/customer/{acme_id}/devices?textSearch=nothing")
    assert status == 200 and page["data"] == [] and page["totalElements"] == 0
    status, page = await rest.get(f"/api/customer/{acme_id}/devices")
    assert page["totalElements"] == 1


# -- claiming ----------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_claim_success_frees_the_request(coap, rest, device):
    acme_id, acme = await customer(rest)
    answer = await coap.request(POST, CLAIM, b'{"secretKey":"s3cret","durationMs":60000}')
    assert code_text(answer.code) == "2.01" and not answer.payload
    status, body = await claim(acme, "dev-1", "s3cret")
    assert status == 200 and body["response"] == "SUCCESS"
    assert body["device"]["customerId"]["id"] == acme_id and body["device"]["name"] == "dev-1"
    status, again = await rest.get(f"/api/device/{device['id']['id']}")
    assert again["customerId"]["id"] == acme_id
    assert await claim(acme, "dev-1", "s3cret") == (400, "CLAIMED")


@pytest_twisted.ensureDeferred
async def test_claim_failures(coap, rest, device):
    _, acme = await customer(rest)
    assert await claim(acme, "dev-1", "x") == (400, "FAILURE")  # no request
    await coap.request(POST, CLAIM, b'{"secretKey":"right"}')
    assert await claim(acme, "dev-1", "wrong") == (400, "FAILURE")
    assert await claim(acme, "dev-1", "right") == (400, "FAILURE")  # evicted by the wrong one
    assert (await claim(acme, "no-such-device", "right"))[0] == 404
    assert (await rest.post("/api/customer/device/dev-1/claim", {"secretKey": "right"}))[0] == 400  # admin key


@pytest_twisted.ensureDeferred
async def test_first_claim_request_wins_until_it_expires(coap, rest, device):
    _, acme = await customer(rest)
    await coap.request(POST, CLAIM, b'{"secretKey":"first","durationMs":300}')
    await coap.request(POST, CLAIM, b'{"secretKey":"second","durationMs":60000}')  # ignored: first still valid
    await task.deferLater(reactor, 0.4, lambda: None)
    assert await claim(acme, "dev-1", "first") == (400, "FAILURE")  # expired (and removed)
    await coap.request(POST, CLAIM, b'{"secretKey":"third"}')
    assert (await claim(acme, "dev-1", "third"))[1]["response"] == "SUCCESS"


@pytest_twisted.ensureDeferred
async def test_claim_body_defaults(coap, rest, device):
    _, acme = await customer(rest)
    assert code_text((await coap.request(POST, CLAIM, b"")).code) == "2.01"  # secret "" and default duration
    assert (await claim(acme, "dev-1", ""))[1]["response"] == "SUCCESS"


@pytest.mark.parametrize("payload", [b"[1]", b'{"secretKey":5}', b'{"secretKey":false}', b'{"durationMs":"x"}',
                                     b'{"durationMs":"--5"}', b'{"durationMs":"' + b"9" * 5000 + b'"}',
                                     b'{"durationMs":1e300}', b"{"])
@pytest_twisted.ensureDeferred
async def test_bad_claim_bodies_are_400(coap, device, payload):
    assert code_text((await coap.request(POST, CLAIM, payload)).code) == "4.00"


@pytest_twisted.ensureDeferred
async def test_get_on_claim_is_405(coap, device):
    assert code_text((await coap.request(GET, CLAIM)).code) == "4.05"


@pytest_twisted.ensureDeferred
async def test_release(coap, rest, device):
    acme_id, acme = await customer(rest)
    _, other = await customer(rest, "Other")
    await coap.request(POST, CLAIM, b'{"secretKey":"s"}')
    await claim(acme, "dev-1", "s")
    assert (await other.delete("/api/customer/device/dev-1/claim"))[0] == 403
    status, body = await acme.delete("/api/customer/device/dev-1/claim")
    assert status == 200 and body["customerId"] is None
    await coap.request(POST, CLAIM, b'{"secretKey":"t"}')
    await claim(other, "dev-1", "t")
    status, body = await rest.delete("/api/customer/device/dev-1/claim")  # admin may free any device
    assert status == 200 and body["customerId"] is None


# -- profiles and provisioning -------------------------------------------------

async def profile(rest, name, kind, key=None, secret=None):
    body = {"name": name, "provisionType": kind}
    if key:
        body.update(provisionDeviceKey=key, provisionDeviceSecret=secret)
    status, answer = await rest.post("/api/deviceProfile", body)
    assert status == 200, answer
    return answer


async def provision(coap, body):
    answer = await coap.request(POST, PROVISION, json.dumps(body).encode())
    assert answer.opt.content_format == 50
    return code_text(answer.code), json.loads(answer.payload)


NOT_FOUND = {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"}
FAILURE = {"errorMsg": "Failed to provision device!", "status": "FAILURE"}


@pytest_twisted.ensureDeferred
async def test_profiles(rest):
    created = await profile(rest, "sensors", "ALLOW_CREATE_NEW_DEVICES", "k1", "s1")
    assert created["name"] == "sensors" and created["provisionType"] == "ALLOW_CREATE_NEW_DEVICES"
    assert created["id"]["entityType"] == "DEVICE_PROFILE"
    status, page = await rest.get("/api/deviceProfiles?pageSize=10&page=0")
    assert [p["name"] for p in page["data"]] == ["default", "sensors"]
    for bad in ({"name": "sensors"}, {"name": "x", "provisionType": "NOPE"},
                {"name": "y", "provisionType": "ALLOW_CREATE_NEW_DEVICES"},
                {"name": "z", "provisionType": "CHECK_PRE_PROVISIONED_DEVICES", "provisionDeviceKey": "k1",
                 "provisionDeviceSecret": "s"}):
        assert (await rest.post("/api/deviceProfile", bad))[0] == 400, bad


@pytest_twisted.ensureDeferred
async def test_provisioning_creates_a_device_that_can_post(coap, rest):
    await profile(rest, "sensors", "ALLOW_CREATE_NEW_DEVICES", "key-1", "secret-1")
    code, body = await provision(coap, {"deviceName": "new-1", "provisionDeviceKey": "key-1",
                                        "provisionDeviceSecret": "secret-1"})
    assert code == "2.01" and body["status"] == "SUCCESS" and body["credentialsType"] == "ACCESS_TOKEN"
    token = body["credentialsValue"]
    assert len(token) >= 20
    answer = await coap.request(POST, f"/api/v1/{token}/telemetry", b'{"t":1}')
    assert code_text(answer.code) == "2.01"
    status, created = await rest.get("/api/tenant/devices?deviceName=new-1")
    assert created["type"] == "sensors"
    again = await provision(coap, {"deviceName": "new-1", "provisionDeviceKey": "key-1",
                                   "provisionDeviceSecret": "secret-1"})
    assert again == ("4.00", FAILURE)
    chosen = await provision(coap, {"deviceName": "new-2", "provisionDeviceKey": "key-1",
                                    "provisionDeviceSecret": "secret-1", "credentialsType": "ACCESS_TOKEN",
                                    "token": "MY-CHOSEN-TOKEN"})
    assert chosen[1]["credentialsValue"] == "MY-CHOSEN-TOKEN"
    taken = await provision(coap, {"deviceName": "new-3", "provisionDeviceKey": "key-1",
                                   "provisionDeviceSecret": "secret-1", "token": "MY-CHOSEN-TOKEN"})
    assert taken == ("4.00", FAILURE)
    unnamed = await provision(coap, {"provisionDeviceKey": "key-1", "provisionDeviceSecret": "secret-1"})
    assert unnamed[0] == "2.01"


@pytest_twisted.ensureDeferred
async def test_provisioning_not_found(coap, rest):
    await profile(rest, "sensors", "ALLOW_CREATE_NEW_DEVICES", "key-1", "secret-1")
    for body in ({"deviceName": "d"}, {"deviceName": "d", "provisionDeviceKey": "", "provisionDeviceSecret": "x"},
                 {"deviceName": "d", "provisionDeviceKey": "nope", "provisionDeviceSecret": "secret-1"},
                 {"deviceName": "d", "provisionDeviceKey": "key-1", "provisionDeviceSecret": "wrong"}):
        assert await provision(coap, body) == ("4.00", NOT_FOUND), body


@pytest_twisted.ensureDeferred
async def test_check_pre_provisioned_devices(coap, rest):
    await profile(rest, "pre", "CHECK_PRE_PROVISIONED_DEVICES", "key-p", "secret-p")
    await rest.post("/api/device?accessToken=PRE-TOKEN-123", {"name": "meter-1", "type": "pre"})
    await rest.post("/api/device", {"name": "meter-2"})  # other profile
    request = {"provisionDeviceKey": "key-p", "provisionDeviceSecret": "secret-p"}
    assert await provision(coap, {**request, "deviceName": "meter-1"}) == (
        "2.01", {"credentialsValue": "PRE-TOKEN-123", "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"})
    assert await provision(coap, {**request, "deviceName": "meter-1"}) == ("4.00", FAILURE)  # only once
    assert await provision(coap, {**request, "deviceName": "meter-2"}) == ("4.00", FAILURE)
    assert await provision(coap, {**request, "deviceName": "unknown"}) == ("4.00", FAILURE)


@pytest_twisted.ensureDeferred
async def test_provision_request_errors(coap):
    assert code_text((await coap.request(GET, PROVISION)).code) == "4.05"
    for payload in (b"{", b"[1]", b'{"provisionDeviceKey":5}'):
        answer = await coap.request(POST, PROVISION, payload)
        assert code_text(answer.code) == "4.00" and answer.opt.content_format == 0
    assert code_text((await coap.request(POST, PROVISION, b"{}", content_format=41)).code) == "4.15"  # XML
    answer = await coap.request(POST, PROVISION, b"{}", content_format=60)  # not CBOR
    assert code_text(answer.code) == "4.00" and b"CBOR" in answer.payload


@pytest_twisted.ensureDeferred
async def test_unauthenticated_provision_answers_stay_small(coap):
    answer = await coap.request(POST, PROVISION, b'{"provisionDeviceKey":"' + b"k" * 200 + b'"}')
    assert len(answer.payload) <= 96


@pytest_twisted.ensureDeferred
async def test_provisioned_devices_obey_the_device_rules(coap, rest):
    await profile(rest, "sensors", "ALLOW_CREATE_NEW_DEVICES", "key-1", "secret-1")
    request = {"provisionDeviceKey": "key-1", "provisionDeviceSecret": "secret-1"}
    assert await provision(coap, {**request, "deviceName": "n" * 300}) == ("4.00", FAILURE)
    assert await provision(coap, {**request, "deviceName": "ok", "token": "a/b"}) == ("4.00", FAILURE)
    assert (await rest.get("/api/tenant/devices?pageSize=10&page=0"))[1]["totalElements"] == 0
