"""CBOR (Content-Format 60) on JSON profiles over real UDP: requests read with the JSON data model,
answers and observations in CBOR with Accept 60; and libcoap's client sending prepared binary bodies
(``coap-client-notls -f FILE -t 60`` / ``-t 42``) to a twistd node."""

from __future__ import annotations

import json
import subprocess

import cbor2
import pytest
import pytest_twisted
from twisted.internet import defer
from txthings import coap as tx

from tests.blocking import rest as blocking_rest
from tests.coapclient import ACK, CON, GET, POST, code_text
from tests.conftest import require_tool
from tests.protodevice import generate

TELEMETRY, ATTRIBUTES, RPC = "/api/v1/TOKEN-1/telemetry", "/api/v1/TOKEN-1/attributes", "/api/v1/TOKEN-1/rpc"
ACCEPT_CBOR = [(tx.ACCEPT, bytes([60]))]


async def latest(rest, device):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                  "?useStrictDataTypes=true")
    assert status == 200
    return {key: points[0]["value"] for key, points in body.items()}


async def notification(client, token, timeout=3.0):
    while True:
        message = await client.receive(timeout)
        if message.token == token:
            if message.mtype == CON:
                client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
            return message


def cbor_body(message):
    assert message.opt.content_format == 60
    return cbor2.loads(message.payload)


@pytest_twisted.ensureDeferred
async def test_cbor_telemetry_and_attributes_are_typed_as_json(coap, rest, device):
    body = cbor2.dumps([{"ts": 1700000000000, "values": {"t": 20.5}},
                        {"n": 42, "d": 42.0, "s": "0042", "b": True, "o": {"a": [1, 2.5]}, "skip": None}])
    assert code_text((await coap.request(POST, TELEMETRY, body, content_format=60)).code) == "2.01"
    assert await latest(rest, device) == {"t": 20.5, "n": 42, "d": 42.0, "s": 42, "b": True, "o": {"a": [1, 2.5]}}
    attrs = cbor2.dumps({"fw": "1.2.0"})
    assert code_text((await coap.request(POST, ATTRIBUTES, attrs, content_format=60)).code) == "2.01"
    answer = await coap.request(GET, ATTRIBUTES, query=["clientKeys=fw"])
    assert answer.opt.content_format == 50 and json.loads(answer.payload) == {"client": {"fw": "1.2.0"}}


@pytest.mark.parametrize("payload, fragment", [
    (cbor2.dumps({"a": b"\x00"}), b"byte string"),
    (bytes.fromhex("a16161c11a514b67b0"), b"tags are not allowed"),  # {"a": epoch date}
    (bytes.fromhex("a16161c249010000000000000000"), b"tags are not allowed"),  # a bignum
    (bytes.fromhex("a16161f7"), b"undefined"),
    (bytes.fromhex("a16161f97e00"), b"NaN and infinities"),
    (bytes.fromhex("a16161f97c00"), b"NaN and infinities"),
    (bytes.fromhex("a10102"), b"keys must be text"),
    (bytes.fromhex("a2616101616102"), b"Duplicate map key"),
    (bytes.fromhex("a1616101ff"), b"1 bytes after the data item"),
    (bytes.fromhex("a16161"), b"invalid CBOR"),
    (b"", b"empty body"),
    (b'{"a":1}', b"invalid CBOR"),
])
@pytest_twisted.ensureDeferred
async def test_what_json_cannot_hold_is_400_with_a_diagnostic(coap, rest, device, payload, fragment):
    answer = await coap.request(POST, TELEMETRY, payload, content_format=60)
    assert code_text(answer.code) == "4.00" and answer.opt.content_format == 0 and fragment in answer.payload
    assert await latest(rest, device) == {}  # nothing stored


@pytest_twisted.ensureDeferred
async def test_accept_60_answers_in_cbor(coap, rest, device):
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE", {"k": 1})
    answer = await coap.request(GET, ATTRIBUTES, extra_options=ACCEPT_CBOR)
    assert code_text(answer.code) == "2.05" and cbor_body(answer) == {"shared": {"k": 1}}
    answer = await coap.request(POST, RPC, cbor2.dumps({"method": "m", "params": [1]}), content_format=60,
                                extra_options=ACCEPT_CBOR)
    assert code_text(answer.code) == "2.05" and cbor_body(answer) == {"method": "m", "params": [1]}
    answer = await coap.request(POST, RPC, b'{"method":"m"}', extra_options=ACCEPT_CBOR)  # JSON in, CBOR out
    assert cbor_body(answer) == {"method": "m"}


@pytest_twisted.ensureDeferred
async def test_observations_registered_with_accept_60_are_cbor(coap, rest, device):
    device_id = device["id"]["id"]
    first = await coap.request(GET, ATTRIBUTES, observe=0, token=b"cbor-a", extra_options=ACCEPT_CBOR)
    assert cbor_body(first) == {}
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"mode": "eco"})
    assert cbor_body(await notification(coap, b"cbor-a")) == {"mode": "eco"}
    await rest.delete(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE?keys=mode")
    assert cbor_body(await notification(coap, b"cbor-a")) == {"deleted": ["mode"]}
    registered = await coap.request(GET, RPC, observe=0, token=b"cbor-r", extra_options=ACCEPT_CBOR)
    json_observer = await coap.request(GET, RPC, observe=0, token=b"json-r")
    assert cbor_body(registered) == {} and json.loads(json_observer.payload) == {}
    call = defer.ensureDeferred(rest.post(f"/api/rpc/oneway/{device_id}", {"method": "blink", "params": {"n": 2}}))
    got = {message.token: message for message in [await notification(coap, b"cbor-r"),
                                                   await notification(coap, b"json-r")]}
    expected = {"id": 1, "method": "blink", "params": {"n": 2}}
    assert cbor_body(got[b"cbor-r"]) == expected and json.loads(got[b"json-r"].payload) == expected
    assert (await call)[0] == 200
    reply = cbor2.dumps({"done": True})
    assert code_text((await coap.request(POST, f"{RPC}/1", reply, content_format=60)).code) == "2.01"


@pytest_twisted.ensureDeferred
async def test_cbor_claim_and_provisioning(coap, rest, device):
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-1/claim", b"", content_format=60)).code) == "2.01"
    status, _ = await rest.post("/api/deviceProfile", {"name": "auto", "provisionType": "ALLOW_CREATE_NEW_DEVICES",
                                                       "provisionDeviceKey": "K", "provisionDeviceSecret": "S"})
    request = cbor2.dumps({"deviceName": "c-1", "provisionDeviceKey": "K", "provisionDeviceSecret": "S"})
    answer = await coap.request(POST, "/api/v1/provision", request, content_format=60, extra_options=ACCEPT_CBOR)
    assert code_text(answer.code) == "2.01" and cbor_body(answer)["status"] == "SUCCESS"
    answer = await coap.request(POST, "/api/v1/provision", request, content_format=60)
    assert code_text(answer.code) == "4.00" and json.loads(answer.payload)["status"] == "FAILURE"  # name taken


# -- libcoap's client with a prepared binary body ----------------------------------------------------

PROTOBUF_PROFILE = {"name": "pb", "transportType": "COAP", "profileData": {"transportConfiguration": {
    "type": "COAP", "coapDeviceTypeConfiguration": {"transportPayloadTypeConfiguration": {
        "transportPayloadType": "PROTOBUF"}}}}}


def test_libcoap_client_sends_prepared_cbor_and_protobuf_bodies(server, tmp_path):
    client = require_tool("coap-client-notls", "install Debian's libcoap3-bin (apt-get install libcoap3-bin)")
    status, device = blocking_rest(server.url, "POST", "/api/device?accessToken=LIBCOAP-CBOR", {"name": "libcoap-cbor"})
    assert status == 200
    (tmp_path / "reading.cbor").write_bytes(cbor2.dumps({"temperature": 21.5, "ok": True}))
    url = f"coap://127.0.0.1:{server.coap_port}/api/v1/LIBCOAP-CBOR/telemetry"
    done = subprocess.run([client, "-m", "post", "-t", "60", "-f", str(tmp_path / "reading.cbor"), url],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, latest = blocking_rest(server.url, "GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}"
                                                      "/values/timeseries?useStrictDataTypes=true")
    assert {k: v[0]["value"] for k, v in latest.items()} == {"temperature": 21.5, "ok": True}

    status, profile = blocking_rest(server.url, "POST", "/api/deviceProfile", PROTOBUF_PROFILE)
    assert status == 200, profile
    status, device = blocking_rest(server.url, "POST", "/api/device?accessToken=LIBCOAP-PB",
                                   {"name": "libcoap-pb", "type": "pb"})
    schema = profile["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"]["deviceTelemetryProtoSchema"]
    module = generate(tmp_path, schema)
    (tmp_path / "reading.pb").write_bytes(module.SensorDataReading(temperature=19.25, humidity=40.0).SerializeToString())
    url = f"coap://127.0.0.1:{server.coap_port}/api/v1/LIBCOAP-PB/telemetry"
    done = subprocess.run([client, "-m", "post", "-t", "42", "-f", str(tmp_path / "reading.pb"), url],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, latest = blocking_rest(server.url, "GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}"
                                                      "/values/timeseries?useStrictDataTypes=true")
    assert {k: v[0]["value"] for k, v in latest.items()} == {"temperature": 19.25, "humidity": 40.0}
    url = f"coap://127.0.0.1:{server.coap_port}/api/v1/LIBCOAP-PB/attributes"
    (tmp_path / "junk.pb").write_bytes(b"\xff\xff\xff")
    done = subprocess.run([client, "-m", "post", "-t", "42", "-f", str(tmp_path / "junk.pb"), url],
                          capture_output=True, timeout=30, text=True)
    assert "4.00" in done.stdout + done.stderr and "attributes.SensorConfiguration" in done.stdout + done.stderr
