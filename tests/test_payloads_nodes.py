"""A profile's payload type changed through one node reaches the devices served by another node on
the same Redis (``ProfileChanged`` over the store's bus), renamed profiles too."""

from __future__ import annotations

import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.coapclient import POST, code_text, open_client
from tests.conftest import REDIS_URL, Rest, require_redis
from tests.protodevice import generate
from tests.redisutil import Resp


@pytest.fixture
def redis_store():
    url = require_redis()
    prefix = f"payloads-{uuid.uuid4().hex[:12]}"
    yield f"{url}?prefix={prefix}&timeout=2"
    client = Resp.for_url(REDIS_URL)
    client.delete_prefix(prefix)
    client.close()


def transport(payload_type):
    return {"type": "COAP", "coapDeviceTypeConfiguration": {"transportPayloadTypeConfiguration": {
        "transportPayloadType": payload_type}}}


async def until(check, timeout=5.0):
    """Wait until ``await check()`` is true (polling every 20 ms), or fail."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_profile_saved_on_one_node_changes_the_format_on_the_other(start_node, redis_store, tmp_path):
    a = await start_node("--store", redis_store)
    b = await start_node("--store", redis_store)
    rest_a = Rest(f"http://127.0.0.1:{a.http_address[1]}")
    status, profile = await rest_a.post("/api/deviceProfile", {"name": "meters"})
    status, device = await rest_a.post("/api/device?accessToken=NODE-PB", {"name": "m-1", "type": "meters"})
    client = await open_client(("127.0.0.1", b.coap_address[1]))
    assert code_text((await client.request(POST, "/api/v1/NODE-PB/telemetry", b'{"t":1}')).code) == "2.01"
    assert b.core.payloads.cached("meters") is not None  # node b knows the profile as JSON now

    body = {**profile, "transportType": "COAP", "profileData": {"transportConfiguration": transport("PROTOBUF")}}
    status, saved = await rest_a.post("/api/deviceProfile", body)
    assert status == 200, saved
    schema = saved["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"]["deviceTelemetryProtoSchema"]
    reading = generate(tmp_path, schema).SensorDataReading(temperature=4.5).SerializeToString()

    async def protobuf_taken():
        return code_text((await client.request(POST, "/api/v1/NODE-PB/telemetry", reading)).code) == "2.01"

    await until(protobuf_taken)  # node b heard of the change: the device's next request is Protobuf
    status, latest = await rest_a.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                      "?useStrictDataTypes=true")
    assert latest["temperature"][0]["value"] == 4.5

    status, renamed = await rest_a.post("/api/deviceProfile", {**body, "name": "gauges"})
    assert status == 200, renamed
    await until(lambda: _true(b.core.payloads.cached("meters") is None))
    assert await protobuf_taken()  # the device's type followed the rename; node b finds its profile
    assert b.core.payloads.cached("gauges") is not None
    await client.port.stopListening()


async def _true(value):
    return value
