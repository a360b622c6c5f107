"""The server side of the web console: its files at / and /console/ beside the REST API, their
security headers, and the device infos (devices with their activity) the device list reads."""

from __future__ import annotations

import pytest_twisted
import treq

from tests.coapclient import POST, code_text, open_client
from tests.conftest import ADMIN_KEY


async def get(node, path, headers=None):
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}{path}", headers=headers or {})
    return response, await response.content()


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_files_come_without_a_key_with_a_strict_policy(node):
    response, body = await get(node, "/")
    assert response.code == 200 and b"<html" in body.lower()
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/html")
    policy = response.headers.getRawHeaders(b"content-security-policy")[0]
    assert b"script-src 'self'" in policy and b"default-src 'none'" in policy and b"unsafe-inline" not in policy
    assert response.headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]
    for script in (b"/console/",):
        assert script in body  # the page loads its files from /console/
    response, _ = await get(node, "/console/js/")
    assert response.code == 404  # no directory listing
    response, _ = await get(node, "/console/../tbcoap.sqlite3")
    assert response.code in (400, 404)


@pytest_twisted.ensureDeferred
async def test_the_api_is_unchanged_beside_the_console(node):
    response, body = await get(node, "/api/tenant/devices?pageSize=10")
    assert response.code == 401  # no key: 401, as before
    response, _ = await get(node, "/api/nothing-here", {"X-Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.code == 404
    response = await treq.post(f"http://127.0.0.1:{node.http_address[1]}/", b"x")
    assert response.code in (401, 404, 405)  # only GET serves the page


@pytest_twisted.ensureDeferred
async def test_device_infos_show_activity_and_page(node, rest):
    for n in range(3):
        status, _ = await rest.post(f"/api/device?accessToken=INFO-{n}", {"name": f"info-{n}"})
        assert status == 200
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    answer = await client.request(POST, "/api/v1/INFO-1/telemetry", b'{"t":1}')
    assert code_text(answer.code) == "2.01"
    status, page = await rest.get("/api/tenant/deviceInfos?pageSize=2&page=0&sortProperty=name&sortOrder=ASC")
    assert status == 200 and page["totalElements"] == 3 and page["totalPages"] == 2 and page["hasNext"]
    status, page = await rest.get("/api/tenant/deviceInfos?pageSize=10&page=0&textSearch=info-1")
    assert status == 200 and [d["name"] for d in page["data"]] == ["info-1"]
    assert page["data"][0]["active"] is True and page["data"][0]["lastActivityTime"] > 0
    status, page = await rest.get("/api/tenant/deviceInfos?pageSize=10&page=0&textSearch=info-2")
    assert page["data"][0]["active"] is False and page["data"][0]["lastActivityTime"] is None
    status, body = await rest.get("/api/tenant/deviceInfos?pageSize=1001&page=0")
    assert status == 400 and "1000" in body["message"]
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_customer_reads_its_own_record_and_the_infos_of_its_own_devices_only(node, rest):
    status, customer = await rest.post("/api/customer", {"title": "c1"})
    assert status == 200
    status, other = await rest.post("/api/customer", {"title": "c2"})
    cid, key = customer["id"]["id"], customer["apiKey"]
    status, page = await rest.get(f"/api/customer/{cid}/deviceInfos?pageSize=10&page=0", key=key)
    assert status == 200 and page["data"] == []
    status, found = await rest.get(f"/api/customer/{cid}", key=key)
    assert status == 200 and found["title"] == "c1" and "apiKey" not in found
    status, _ = await rest.get(f"/api/customer/{other['id']['id']}", key=key)
    assert status == 404  # another customer is not found for this key
    status, found = await rest.get(f"/api/customer/{other['id']['id']}")
    assert status == 200 and found["title"] == "c2"
    status, device = await rest.post("/api/device", {"name": "owned"})
    await node.store.set_device_customer(device["id"]["id"], cid, None)  # as a claim does
    status, page = await rest.get("/api/tenant/deviceInfos?pageSize=10&page=0&textSearch=owned")
    assert [(d["name"], d["customerTitle"]) for d in page["data"]] == [("owned", "c1")]
    status, page = await rest.get(f"/api/customer/{cid}/deviceInfos?pageSize=10&page=0", key=key)
    assert [(d["name"], d["customerTitle"], d["active"]) for d in page["data"]] == [("owned", "c1", False)]
    status, _ = await rest.get(f"/api/customer/{other['id']['id']}/deviceInfos?pageSize=10&page=0", key=key)
    assert status == 404
    status, _ = await rest.get("/api/tenant/deviceInfos?pageSize=10&page=0", key=key)
    assert status == 403
