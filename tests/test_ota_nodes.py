"""Two nodes on one shared store (Redis, PostgreSQL): a package assigned through one node reaches a
device observing through the other at once, and the device downloads it from the other node; a
package the device is given later is served at once too (the other node's choice is dropped)."""

from __future__ import annotations

import hashlib
import os

import pytest_twisted

from tests.coapclient import GET, code_text, open_client
from tests.conftest import Rest
from tests.test_ota_download import assign_profile, next_notification, package, setup


@pytest_twisted.ensureDeferred
async def test_assignment_through_one_node_reaches_the_other(start_node, shared_store):
    a = await start_node("--store", shared_store)
    b = await start_node("--store", shared_store)
    rest_a = Rest(f"http://127.0.0.1:{a.http_address[1]}")
    profile, device = await setup(rest_a)
    client = await open_client(("127.0.0.1", b.coap_address[1]))
    try:
        first = await client.request(GET, "/api/v1/OTA-TOKEN/attributes", observe=0, token=b"obs")
        assert code_text(first.code) == "2.05"
        assert code_text((await client.request(GET, "/fw/OTA-TOKEN")).code) == "4.04"  # node b remembers "none"
        data = os.urandom(3000)
        info = await package(rest_a, profile["id"]["id"], data, version="1.0")
        await assign_profile(rest_a, profile, info["id"]["id"])
        change = await next_notification(client)
        assert change["fw_version"] == "1.0" and change["fw_checksum"] == hashlib.sha256(data).hexdigest()
        got = await client.request(GET, "/fw/OTA-TOKEN", query=["size=1024", "chunk=0"])
        assert code_text(got.code) == "2.05" and got.payload == data[:1024]
        # the device's own package, saved through node a: node b serves it at once
        own = os.urandom(500)
        mine = await package(rest_a, profile["id"]["id"], own, version="2.0")
        status, saved = await rest_a.post("/api/device", {**device, "firmwareId": {"id": mine["id"]["id"]}})
        assert status == 200, saved
        change = await next_notification(client)
        assert change["fw_version"] == "2.0"
        got = await client.request(GET, "/fw/OTA-TOKEN")
        assert got.payload == own
    finally:
        await client.port.stopListening()
