"""Device management beyond creating: giving devices to customers and freeing them, deleting
customers and device profiles, choosing the default profile; through REST (in-process nodes, two
of them on one Redis for what must hold on every node) and through the ``tbcoap`` command."""

from __future__ import annotations

import json
import time
import uuid

import pytest_twisted

from tests.conftest import Rest
from tests.test_cli import ok, tbcoap, unique
from tests.test_redis_nodes import rest_of


async def customer(rest, title=None):
    status, made = await rest.post("/api/customer", {"title": title or f"c-{uuid.uuid4().hex[:8]}"})
    assert status == 200, made
    return made["id"]["id"], Rest(rest.base, key=made["apiKey"])


async def device(rest, name=None, **fields):
    status, made = await rest.post("/api/device", {"name": name or f"d-{uuid.uuid4().hex[:8]}", **fields})
    assert status == 200, made
    return made


@pytest_twisted.ensureDeferred
async def test_assign_and_unassign(rest):
    customer_id, as_customer = await customer(rest)
    other_id, as_other = await customer(rest)
    d = await device(rest)
    path = f"/api/customer/{customer_id}/device/{d['id']['id']}"
    status, assigned = await rest.post(path)
    assert status == 200 and assigned["customerId"] == {"entityType": "CUSTOMER", "id": customer_id}
    assert (await as_customer.get(f"/api/device/{d['id']['id']}"))[0] == 200
    # to another customer, from the first (ThingsBoard's owner path)
    status, moved = await rest.post(f"/api/owner/CUSTOMER/{other_id}/DEVICE/{d['id']['id']}")
    assert status == 200 and moved["customerId"]["id"] == other_id
    assert (await as_customer.get(f"/api/device/{d['id']['id']}"))[0] == 404
    assert (await as_other.get(f"/api/device/{d['id']['id']}"))[0] == 200
    status, freed = await rest.delete(f"/api/customer/device/{d['id']['id']}")
    assert status == 200 and freed["customerId"] is None
    assert (await rest.delete(f"/api/customer/device/{d['id']['id']}"))[0] == 200  # free already: the same
    # refusals: unknown ids, the wrong role, another tenant
    assert (await rest.post(f"/api/customer/{uuid.uuid4()}/device/{d['id']['id']}"))[0] == 404
    assert (await rest.post(f"/api/customer/{customer_id}/device/{uuid.uuid4()}"))[0] == 404
    assert (await rest.delete(f"/api/customer/device/{uuid.uuid4()}"))[0] == 404
    assert (await as_customer.post(path))[0] == 403
    assert (await as_customer.delete(f"/api/customer/device/{d['id']['id']}"))[0] == 403
    status, me = await rest.get("/api/auth/user")
    assert me["tenantId"]["entityType"] == "TENANT" and me["email"] and me["authority"] == "TENANT_ADMIN"
    await rest.post(path)
    assert (await rest.post(f"/api/owner/TENANT/{uuid.uuid4()}/DEVICE/{d['id']['id']}"))[0] == 404
    status, freed = await rest.post(f"/api/owner/TENANT/{me['tenantId']['id']}/DEVICE/{d['id']['id']}")
    assert status == 200 and freed["customerId"] is None


@pytest_twisted.ensureDeferred
async def test_delete_customer(rest):
    customer_id, as_customer = await customer(rest, "doomed")
    owned = [await device(rest) for _ in range(3)]
    for d in owned:
        await rest.post(f"/api/customer/{customer_id}/device/{d['id']['id']}")
    assert (await as_customer.get("/api/auth/user"))[0] == 200  # the key is known (and cached) now
    assert (await as_customer.delete(f"/api/customer/{customer_id}"))[0] == 403
    assert (await rest.delete(f"/api/customer/{customer_id}"))[0] == 200
    status, body = await as_customer.get("/api/auth/user")
    assert status == 401 and body["status"] == 401
    for d in owned:
        assert (await rest.get(f"/api/device/{d['id']['id']}"))[1]["customerId"] is None
    assert (await rest.delete(f"/api/customer/{customer_id}"))[0] == 404
    assert (await rest.get("/api/tenant/customers?customerTitle=doomed"))[0] == 404
    await customer(rest, "doomed")  # the title is free again


@pytest_twisted.ensureDeferred
async def test_delete_profile_and_choose_the_default(rest):
    status, spare = await rest.post("/api/deviceProfile", {"name": "spare"})
    status, used = await rest.post("/api/deviceProfile", {"name": "used"})
    await device(rest, type="used")
    status, page = await rest.get("/api/deviceProfiles")
    default = next(p for p in page["data"] if p["default"])
    assert default["name"] == "default" and [p["name"] for p in page["data"] if p["default"]] == ["default"]
    status, body = await rest.delete(f"/api/deviceProfile/{used['id']['id']}")
    assert status == 400 and "used by devices" in body["message"]
    status, body = await rest.delete(f"/api/deviceProfile/{default['id']['id']}")
    assert status == 400 and "default" in body["message"]
    assert (await rest.delete(f"/api/deviceProfile/{spare['id']['id']}"))[0] == 200
    assert (await rest.get(f"/api/deviceProfile/{spare['id']['id']}"))[0] == 404
    assert (await rest.delete(f"/api/deviceProfile/{spare['id']['id']}"))[0] == 404

    status, chosen = await rest.post(f"/api/deviceProfile/{used['id']['id']}/default")
    assert status == 200 and chosen["default"] is True and chosen["name"] == "used"
    assert (await device(rest))["type"] == "used"  # a device without a type gets the default
    status, page = await rest.get("/api/deviceProfiles")
    assert [p["name"] for p in page["data"] if p["default"]] == ["used"]
    assert (await rest.delete(f"/api/deviceProfile/{default['id']['id']}"))[0] == 200  # no longer the default
    assert (await rest.post(f"/api/deviceProfile/{uuid.uuid4()}/default"))[0] == 404
    _, as_customer = await customer(rest)
    assert (await as_customer.post(f"/api/deviceProfile/{used['id']['id']}/default"))[0] == 403


@pytest_twisted.ensureDeferred
async def test_a_customer_deleted_on_one_node_is_refused_at_once_by_the_other(start_node, shared_store):
    a = await start_node("--store", shared_store)
    b = await start_node("--store", shared_store)
    rest_a, rest_b = rest_of(a), rest_of(b)
    customer_id, as_customer = await customer(rest_a)
    on_b = Rest(rest_b.base, key=as_customer.key)
    d = await device(rest_a)
    await rest_a.post(f"/api/customer/{customer_id}/device/{d['id']['id']}")
    assert (await on_b.get(f"/api/device/{d['id']['id']}"))[0] == 200  # b knows the key now
    assert (await rest_a.delete(f"/api/customer/{customer_id}"))[0] == 200
    # b refuses the key as soon as the deletion's event reaches it (as a replaced token)
    deadline = time.monotonic() + 5
    while (await on_b.get(f"/api/device/{d['id']['id']}"))[0] != 401:
        assert time.monotonic() < deadline, "the other node still takes the deleted customer's key"
    assert (await rest_b.get(f"/api/device/{d['id']['id']}"))[1]["customerId"] is None


# -- the command line --------------------------------------------------------------------------

def test_cli_assign_unassign_delete(server):
    title, name = unique("ACME"), unique("dev")
    made = json.loads(ok(tbcoap("--json", "customer", "create", title, url=server.url)))
    ok(tbcoap("device", "create", name, url=server.url))
    out = ok(tbcoap("device", "assign", name, "--customer", title, url=server.url))
    assert f"device {name} now belongs to customer {title}" in out
    shown = json.loads(ok(tbcoap("--json", "device", "show", name, url=server.url)))
    assert shown["customerId"]["id"] == made["id"]["id"]
    assert "belongs to no customer" in ok(tbcoap("device", "unassign", name, url=server.url))
    assert json.loads(ok(tbcoap("--json", "device", "show", name, url=server.url)))["customerId"] is None

    ok(tbcoap("device", "assign", name, "--customer", made["id"]["id"], url=server.url))
    assert "its devices are free" in ok(tbcoap("customer", "delete", title, url=server.url))
    assert json.loads(ok(tbcoap("--json", "device", "show", name, url=server.url)))["customerId"] is None
    result = tbcoap("device", "list", url=server.url, key=made["apiKey"])
    assert result.returncode != 0 and "401" in result.stderr
    result = tbcoap("customer", "delete", title, url=server.url)
    assert result.returncode != 0 and "404" in result.stderr
    result = tbcoap("device", "assign", name, "--customer", unique("nobody"), url=server.url)
    assert result.returncode != 0


def test_cli_profile_delete_and_default(server):
    spare, used = unique("spare"), unique("used")
    ok(tbcoap("profile", "create", spare, url=server.url))
    ok(tbcoap("profile", "create", used, url=server.url))
    ok(tbcoap("device", "create", unique("dev"), "--type", used, url=server.url))
    result = tbcoap("profile", "delete", used, url=server.url)
    assert result.returncode != 0 and "used by devices" in result.stderr
    assert f"deleted device profile {spare}" in ok(tbcoap("profile", "delete", spare, url=server.url))
    result = tbcoap("profile", "delete", spare, url=server.url)
    assert result.returncode != 0 and "no device profile named" in result.stderr
    assert f"device profile {used} is the default now" in ok(tbcoap("profile", "default", used, url=server.url))
    assert f"{used} (default)" in ok(tbcoap("profile", "list", "--page-size", "1000", url=server.url))
    ok(tbcoap("profile", "default", "default", url=server.url))
    result = tbcoap("profile", "delete", "default", url=server.url)
    assert result.returncode != 0 and "default" in result.stderr
