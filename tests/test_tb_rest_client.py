"""ThingsBoard's own Python REST client (``tb-rest-client`` on PyPI) against a live ``twistd -n tbcoap``,
unchanged: every one of its methods the REST API serves, with a raw CoAP device on the other side."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.blocking import Coap, rest
from tests.coapclient import build
from tests.conftest import ADMIN_KEY, require

GET, POST = 1, 2
CREATED, CONTENT, UNAUTHORIZED = 0x41, 0x45, 0x81

try:
    from tb_rest_client.models import (
        AllowCreateNewDevicesDeviceProfileProvisionConfiguration,
        ClaimRequest,
        DefaultDeviceProfileConfiguration,
        DefaultDeviceProfileTransportConfiguration,
        Device,
        DeviceId,
        DeviceProfile,
        DeviceProfileData,
        CustomerId,
        DeviceProfileId,
    )
    from tb_rest_client.rest import ApiException
    from tb_rest_client.rest_client import RestClient
except ImportError:  # pragma: no cover - the test extra installs it
    RestClient = None


@pytest.fixture
def client(server):
    """A tb-rest-client logged in with the admin key, as ThingsBoard 4's API keys log in."""
    require(RestClient is not None, "tb-rest-client is not installed", "pip install tb-rest-client")
    rc = RestClient(server.http_url)
    rc.api_key_login(ADMIN_KEY)
    return rc


@pytest.fixture
def coap(server):
    device = Coap(server.coap_address)
    yield device
    device.close()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_device(client, label=None):
    """A device saved with tb-rest-client and its chosen token: ``(Device, token)``."""
    token = unique("TOK")
    device = client.save_device(Device(name=unique("dev"), type="default", label=label), access_token=token)
    return device, token


def refused(call, *args, **kwargs):
    """The ApiException a client call raised: ``(status, parsed body)``."""
    with pytest.raises(ApiException) as raised:
        call(*args, **kwargs)
    return raised.value.status, json.loads(raised.value.body)


# -- devices and credentials ------------------------------------------------------------------

def test_devices(client, coap):
    device, token = new_device(client, label="Kitchen")
    assert isinstance(device, Device) and device.id.entity_type == "DEVICE"
    assert (device.name.startswith("dev-"), device.type, device.label) == (True, "default", "Kitchen")
    assert device.customer_id is None and device.created_time > 0

    assert client.get_tenant_device(device.name).id.id == device.id.id
    assert client.get_device_by_id(device.id).name == device.name
    page = client.get_tenant_devices(10, 0, text_search=device.name[4:], sort_property="name", sort_order="DESC")
    assert [d.name for d in page.data] == [device.name] and page.total_elements == 1 and page.has_next is False

    # the usual update: read, change, save (the body carries the id)
    device.label = "Hall"
    saved = client.save_device(device)
    assert saved.id.id == device.id.id and saved.label == "Hall"
    assert client.get_device_by_id(device.id.id).label == "Hall"

    status, body = refused(client.get_tenant_device, "no-such-device")
    assert status == 404 and body["status"] == 404


def test_credentials(client, coap):
    device, token = new_device(client)
    credentials = client.get_device_credentials_by_device_id(device.id)
    assert (credentials.credentials_type, credentials.credentials_id) == ("ACCESS_TOKEN", token)
    assert credentials.device_id.id == device.id.id

    credentials.credentials_id = unique("NEW")
    updated = client.update_device_credentials(credentials)
    assert updated.credentials_id == credentials.credentials_id
    assert coap.request(POST, f"/api/v1/{token}/telemetry", b'{"t":1}') == UNAUTHORIZED
    assert coap.request(POST, f"/api/v1/{updated.credentials_id}/telemetry", b'{"t":1}') == CREATED


def test_delete_device(client, coap):
    device, token = new_device(client)
    assert client.delete_device(device.id) is None
    status, _ = refused(client.get_device_by_id, device.id)
    assert status == 404
    assert coap.request(POST, f"/api/v1/{token}/telemetry", b'{"t":1}') == UNAUTHORIZED


# -- telemetry ------------------------------------------------------------------------------

def test_latest_history_and_keys(client, coap):
    device, token = new_device(client)
    now = int(time.time() * 1000)
    points = [{"ts": now - 3000 + 1000 * n, "values": {"temperature": 20 + n, "mode": "eco"}} for n in range(3)]
    assert coap.request(POST, f"/api/v1/{token}/telemetry", json.dumps(points)) == CREATED

    latest = client.get_latest_timeseries(device.id, "temperature,mode")
    assert {key: [(p.ts, p.value) for p in values] for key, values in latest.items()} == {
        "temperature": [(now - 1000, "22")], "mode": [(now - 1000, "eco")]}
    strict = client.get_latest_timeseries(device.id, "temperature", use_strict_data_types=True)
    assert strict["temperature"][0].value == 22

    history = client.get_timeseries(device.id, now - 10_000, now, keys="temperature", order_by="ASC",
                                    use_strict_data_types=True)
    assert [(p.ts, p.value) for p in history["temperature"]] == [(now - 3000, 20), (now - 2000, 21), (now - 1000, 22)]
    average = client.get_timeseries(device.id, now - 3000, now, keys="temperature", agg="AVG", interval=3000,
                                    use_strict_data_types=True)
    assert [(p.ts, p.value) for p in average["temperature"]] == [(now - 1500, 21.0)]
    assert sorted(client.get_timeseries_keys_v1(device.id)) == ["mode", "temperature"]


def test_save_and_delete_telemetry(client):
    device, _ = new_device(client)
    client.save_entity_telemetry(device.id, "ANY", [{"ts": 1000, "values": {"a": 1}}, {"ts": 2000, "values": {"a": 2}}])
    client.save_entity_telemetry_with_ttl(device.id, "ANY", 3600, {"ts": 3000, "values": {"a": 3, "b": "x"}})
    history = client.get_timeseries(device.id, 0, 10_000, keys="a,b", order_by="ASC", use_strict_data_types=True)
    assert [(p.ts, p.value) for p in history["a"]] == [(1000, 1), (2000, 2), (3000, 3)]

    client.delete_entity_timeseries(device.id, keys="a", start_ts=2500, end_ts=3500, rewrite_latest_if_deleted=True)
    assert client.get_latest_timeseries(device.id, "a", use_strict_data_types=True)["a"][0].value == 2
    client.delete_entity_timeseries(device.id, keys="a,b", delete_all_data_for_keys=True)
    assert client.get_timeseries_keys_v1(device.id) == []


# -- attributes -----------------------------------------------------------------------------

def test_attributes(client, coap):
    device, token = new_device(client)
    assert coap.request(POST, f"/api/v1/{token}/attributes", b'{"fw":"v1"}') == CREATED
    client.save_device_attributes(device.id, "SHARED_SCOPE", {"target": 21.5, "mode": "eco"})
    code, payload = coap.exchange(GET, f"/api/v1/{token}/attributes")
    assert code == CONTENT and json.loads(payload) == {"client": {"fw": "v1"},
                                                       "shared": {"target": 21.5, "mode": "eco"}}

    shared = client.get_attributes_by_scope(device.id, "SHARED_SCOPE", "target")
    assert [(a.key, a.value) for a in shared] == [("target", 21.5)] and shared[0].last_update_ts > 0
    every = {a.key: a.value for a in client.get_attributes(device.id)}
    assert {"fw": "v1", "target": 21.5, "mode": "eco"}.items() <= every.items()
    assert {"fw", "target", "mode", "lastActivityTime"} <= set(client.get_attribute_keys(device.id))

    client.delete_device_attributes(device.id, "SHARED_SCOPE", "mode")
    assert [a.key for a in client.get_attributes_by_scope(device.id, "SHARED_SCOPE")] == ["target"]


# -- server-side RPC ------------------------------------------------------------------------

def observe_rpc(coap, token):
    """Register for RPC (GET .../rpc, Observe 0) on the raw socket."""
    coap.sock.sendto(build(GET, f"/api/v1/{token}/rpc", mid=7, token=b"ob", observe=0), coap.address)
    _, code, _, _, payload = coap.receive(5)
    assert code == CONTENT and json.loads(payload) == {}


def next_rpc(coap):
    """The next RPC notification (acknowledged): its JSON."""
    while True:
        mtype, code, mid, token, payload = coap.receive(10)
        if token == b"ob" and payload:
            if mtype == 0:
                coap.sock.sendto(bytes([0x60, 0, *mid.to_bytes(2, "big")]), coap.address)
            return json.loads(payload)


@pytest.mark.parametrize("kind", ["oneway", "twoway"])
def test_rpc(client, coap, kind):
    device, token = new_device(client)
    observe_rpc(coap, token)
    call = (client.handle_two_way_device_rpc_request if kind == "twoway"
            else client.handle_one_way_device_rpc_request)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(call, device.id, {"method": "setGpio", "params": {"pin": 7}, "timeout": 5000})
        request = next_rpc(coap)
        assert request == {"id": request["id"], "method": "setGpio", "params": {"pin": 7}}
        if kind == "twoway":
            assert coap.request(POST, f"/api/v1/{token}/rpc/{request['id']}", b'{"pin":7,"value":1}') == CREATED
        result = answer.result(timeout=10)
    assert result == ({"pin": 7, "value": 1} if kind == "twoway" else None)


# -- claiming and profiles ------------------------------------------------------------------

def customer_client(server):
    status, customer = rest(server.http_url, "POST", "/api/customer", {"title": unique("ACME")})
    assert status == 200, customer
    rc = RestClient(server.http_url)
    rc.api_key_login(customer["apiKey"])
    return rc, customer["id"]["id"]


def test_claim_device_by_name(client, server, coap):
    as_customer, customer_id = customer_client(server)
    device, token = new_device(client)
    assert coap.request(POST, f"/api/v1/{token}/claim", b'{"secretKey":"s3","durationMs":60000}') == CREATED
    assert refused(as_customer.claim_device_by_name, device.name, ClaimRequest(secret_key="wrong")) == (400, "FAILURE")

    assert coap.request(POST, f"/api/v1/{token}/claim", b'{"secretKey":"s3","durationMs":60000}') == CREATED
    result = as_customer.claim_device_by_name(device.name, ClaimRequest(secret_key="s3"))
    assert result["response"] == "SUCCESS" and result["device"]["customerId"]["id"] == customer_id
    assert client.get_device_by_id(device.id).customer_id.id == customer_id
    assert refused(as_customer.claim_device_by_name, device.name, ClaimRequest(secret_key="s3")) == (400, "CLAIMED")

    # no body at all: the secret is "" (a device that asked with an empty body)
    other, other_token = new_device(client)
    assert coap.request(POST, f"/api/v1/{other_token}/claim", b"") == CREATED
    assert as_customer.claim_device_by_name(other.name)["response"] == "SUCCESS"


def test_save_device_profile_and_provision(client, coap):
    key, secret = unique("pk"), unique("ps")
    profile = DeviceProfile(
        name=unique("sensors"), type="DEFAULT", transport_type="DEFAULT", provision_type="ALLOW_CREATE_NEW_DEVICES",
        provision_device_key=key,
        profile_data=DeviceProfileData(
            configuration=DefaultDeviceProfileConfiguration(type="DEFAULT"),
            transport_configuration=DefaultDeviceProfileTransportConfiguration(type="DEFAULT"),
            provision_configuration=AllowCreateNewDevicesDeviceProfileProvisionConfiguration(
                type="ALLOW_CREATE_NEW_DEVICES", provision_device_secret=secret)))
    saved = client.save_device_profile(profile)
    assert saved.id.entity_type == "DEVICE_PROFILE" and saved.name == profile.name
    assert saved.provision_device_key == key
    assert saved.profile_data.provision_configuration.provision_device_secret == secret

    request = {"deviceName": unique("prov"), "provisionDeviceKey": key, "provisionDeviceSecret": secret}
    code, payload = coap.exchange(POST, "/api/v1/provision", json.dumps(request))
    assert code == CREATED and json.loads(payload)["status"] == "SUCCESS"
    provisioned = client.get_tenant_device(request["deviceName"])
    assert provisioned.type == profile.name

    saved.provision_type = "DISABLED"
    saved.profile_data.provision_configuration.type = "DISABLED"
    assert client.save_device_profile(saved).provision_type == "DISABLED"


def test_assign_unassign_and_delete_customer(client, server):
    as_customer, customer_id = customer_client(server)
    device, _ = new_device(client)
    assigned = client.assign_device_to_customer(CustomerId(customer_id, "CUSTOMER"), device.id)
    assert assigned.customer_id.id == customer_id
    assert as_customer.get_device_by_id(device.id).name == device.name  # the customer sees it now
    freed = client.unassign_device_from_customer(device.id)  # GET /api/auth/user, then the tenant owner path
    assert freed.customer_id is None
    assert refused(as_customer.get_device_by_id, device.id)[0] == 404

    client.assign_device_to_customer(CustomerId(customer_id, "CUSTOMER"), device.id)
    client.delete_customer(CustomerId(customer_id, "CUSTOMER"))
    assert client.get_device_by_id(device.id).customer_id is None  # its devices are free
    assert refused(as_customer.get_device_by_id, device.id)[0] == 401  # its key is refused at once
    assert refused(client.delete_customer, CustomerId(customer_id, "CUSTOMER"))[0] == 404


def test_delete_device_profile(client):
    unused = client.save_device_profile(DeviceProfile(name=unique("spare"), type="DEFAULT", transport_type="DEFAULT",
                                                      provision_type="DISABLED"))
    used = client.save_device_profile(DeviceProfile(name=unique("used"), type="DEFAULT", transport_type="DEFAULT",
                                                    provision_type="DISABLED"))
    client.save_device(Device(name=unique("dev"), type=used.name))
    status, body = refused(client.delete_device_profile, used.id)
    assert status == 400 and "used by devices" in body["message"]
    client.delete_device_profile(unused.id)
    assert refused(client.delete_device_profile, unused.id)[0] == 404
    default = next(p for p in client.get_device_profiles(100, 0).data if p.default)
    assert refused(client.delete_device_profile, DeviceProfileId(default.id.id, "DEVICE_PROFILE"))[0] == 400


def test_errors_are_api_exceptions_with_json(client):
    status, body = refused(client.get_device_by_id, DeviceId(str(uuid.uuid4()), "DEVICE"))
    assert status == 404 and set(body) == {"status", "message"}
    wrong = RestClient(client.base_url)
    wrong.api_key_login("not-a-key")
    status, body = refused(wrong.get_tenant_devices, 10, 0)
    assert status == 401 and body["status"] == 401


CLIENT_METHODS = [
    "api_key_login", "save_device", "get_tenant_device", "get_tenant_devices", "get_device_by_id",
    "get_device_credentials_by_device_id", "update_device_credentials", "delete_device", "get_latest_timeseries",
    "get_timeseries", "get_timeseries_keys_v1", "save_entity_telemetry", "delete_entity_timeseries",
    "save_device_attributes", "get_attributes_by_scope", "get_attributes", "get_attribute_keys",
    "delete_device_attributes", "handle_one_way_device_rpc_request", "handle_two_way_device_rpc_request",
    "claim_device_by_name", "save_device_profile", "assign_device_to_customer", "unassign_device_from_customer",
    "delete_customer", "delete_device_profile",
]


def test_every_supported_client_method_is_driven_here():
    """docs/rest-api.md promises these methods; each is called by a test above."""
    with open(__file__, encoding="utf-8") as f:
        source = f.read().split("CLIENT_METHODS = [")[0]
    assert [m for m in CLIENT_METHODS if not re.search(rf"\.{m}\b", source)] == []
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "rest-api.md"), encoding="utf-8") as f:
        documented = f.read()
    assert [m for m in CLIENT_METHODS if f"`{m}`" not in documented] == []
