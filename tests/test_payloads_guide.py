"""docs/device-api.md's Payload formats work as written: each worked example (marked
``<!-- example NAME -->``) is sent as it stands (its bytes, its JSON) to a node, and what the docs
say comes back (the answer's bytes, the decoded message, what REST shows) is what comes back."""

from __future__ import annotations

import json
import pathlib
import re

import pytest_twisted
from google.protobuf import text_format
from twisted.internet import defer
from txthings import coap as tx

from tests.coapclient import ACK, CON, GET, POST, code_text
from tests.protodevice import thingsboard

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "device-api.md"


def examples():
    """``{name: [(info string, text), ..]}``: the code blocks after each marker, in order."""
    section = GUIDE.read_text().split("## Payload formats", 1)[1].split("\n## ", 1)[0]
    out = {}
    parts = re.split(r"<!-- example ([\w-]+) -->", section)
    for name, text in zip(parts[1::2], parts[2::2]):
        out[name] = re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    return out


def hexbytes(text):
    return bytes.fromhex(text.replace("\n", " "))


async def notification(client, token, timeout=3.0):
    while True:
        message = await client.receive(timeout)
        if message.token == token:
            if message.mtype == CON:
                client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
            return message


async def latest(rest, device_id):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries?useStrictDataTypes=true")
    return {key: points[0]["value"] for key, points in body.items()}


def same_but_ts(message, text, cls):
    """``message`` equals the text format ``text`` once every ``ts`` is set to 0 in both."""
    expected = text_format.Parse(text, cls())
    for m in (message, expected):
        for field in ("clientAttributeList", "sharedAttributeList", "sharedUpdated"):
            for item in getattr(m, field, ()):
                assert item.ts > 0 or m is expected
                item.ts = 0
    return message == expected


@pytest_twisted.ensureDeferred
async def test_the_payload_formats_section_as_written(coap, rest, tmp_path):
    found = examples()
    assert sorted(found) == sorted(["cbor-telemetry", "cbor-answer", "profile", "telemetry", "attributes",
                                    "attribute-request", "attribute-notification", "rpc-request", "rpc-reply",
                                    "client-rpc", "claim", "provision"])
    tb = thingsboard(tmp_path)

    # CBOR, on a device of the default (JSON) profile
    status, plain = await rest.post("/api/device?accessToken=JSONDEV", {"name": "json-device"})
    (_, sent), _console, (_, shown) = found["cbor-telemetry"]
    answer = await coap.request(POST, "/api/v1/JSONDEV/telemetry", hexbytes(sent), content_format=60)
    assert code_text(answer.code) == "2.01"
    assert await latest(rest, plain["id"]["id"]) == json.loads(shown)
    await rest.post(f"/api/plugins/telemetry/DEVICE/{plain['id']['id']}/SHARED_SCOPE", {"interval": 30})
    ((_, answered),) = found["cbor-answer"]
    answer = await coap.request(GET, "/api/v1/JSONDEV/attributes", query=["sharedKeys=interval"],
                                extra_options=[(tx.ACCEPT, bytes([60]))])
    assert answer.opt.content_format == 60 and answer.payload == hexbytes(answered)

    # the Protobuf profile and its default schema
    (_, body), (_, schema), (_, refused) = found["profile"]
    bad = json.loads(body)
    bad["name"] = "refused"
    bad["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"]["transportPayloadTypeConfiguration"][
        "deviceTelemetryProtoSchema"] = 'syntax = "proto3";\nmessage A {\n  int32 x = 1\n}\n'
    assert await rest.post("/api/deviceProfile", bad) == (400, json.loads(refused))
    status, profile = await rest.post("/api/deviceProfile", json.loads(body))
    assert status == 200, profile
    given = profile["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"]
    assert given["deviceTelemetryProtoSchema"] == schema
    status, device = await rest.post("/api/device?accessToken=TOKEN", {"name": "thermo-1", "type": "thermometers"})
    device_id = device["id"]["id"]

    (_, sent), _console, (_, shown) = found["telemetry"]
    answer = await coap.request(POST, "/api/v1/TOKEN/telemetry", hexbytes(sent), content_format=42)
    assert code_text(answer.code) == "2.01" and await latest(rest, device_id) == json.loads(shown)

    ((_, sent),) = found["attributes"]
    assert code_text((await coap.request(POST, "/api/v1/TOKEN/attributes", hexbytes(sent))).code) == "2.01"
    status, client = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/CLIENT_SCOPE")
    assert [(a["key"], a["value"]) for a in client] == [("firmwareVersion", "1.2.0")]

    ((_, text),) = found["attribute-request"]
    answer = await coap.request(GET, "/api/v1/TOKEN/attributes", query=["clientKeys=firmwareVersion"])
    assert answer.opt.content_format == 42
    assert same_but_ts(tb.GetAttributeResponseMsg.FromString(answer.payload), text, tb.GetAttributeResponseMsg)

    ((_, text),) = found["attribute-notification"]
    first = await coap.request(GET, "/api/v1/TOKEN/attributes", observe=0, token=b"guide")
    assert code_text(first.code) == "2.05" and len(first.payload) == 0  # no shared attributes yet
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"interval": 30})
    change = await notification(coap, b"guide")
    assert same_but_ts(tb.AttributeUpdateNotificationMsg.FromString(change.payload), text,
                       tb.AttributeUpdateNotificationMsg)

    ((_, request),) = found["rpc-request"]
    (_, reply), (_, caller_gets) = found["rpc-reply"]
    registered = await coap.request(GET, "/api/v1/TOKEN/rpc", observe=0, token=b"g-rpc")
    assert registered.opt.content_format == 42 and len(registered.payload) == 0
    call = defer.ensureDeferred(rest.post(f"/api/rpc/twoway/{device_id}",
                                          {"method": "setGpio", "params": {"pin": 4, "value": 1}}))
    assert (await notification(coap, b"g-rpc")).payload == hexbytes(request)
    assert code_text((await coap.request(POST, "/api/v1/TOKEN/rpc/1", hexbytes(reply))).code) == "2.01"
    assert await call == (200, json.loads(caller_gets))

    (_, asked), (_, answered) = found["client-rpc"]
    answer = await coap.request(POST, "/api/v1/TOKEN/rpc", hexbytes(asked))
    assert code_text(answer.code) == "2.05" and answer.payload == hexbytes(answered)

    ((_, claim),) = found["claim"]
    assert code_text((await coap.request(POST, "/api/v1/TOKEN/claim", hexbytes(claim))).code) == "2.01"
    status, customer = await rest.post("/api/customer", {"title": "ACME"})
    status, claimed = await rest.call("POST", "/api/customer/device/thermo-1/claim", {"secretKey": "s3cret"},
                                      key=customer["apiKey"])
    assert status == 200 and claimed["response"] == "SUCCESS"

    (_, request), (_, success), (_, not_found) = found["provision"]
    status, _ = await rest.post("/api/deviceProfile", {"name": "auto", "provisionType": "ALLOW_CREATE_NEW_DEVICES",
                                                       "provisionDeviceKey": "KEY", "provisionDeviceSecret": "SECRET"})
    answer = await coap.request(POST, "/api/v1/provision", hexbytes(request))
    assert code_text(answer.code) == "2.01" and answer.opt.content_format == 42
    assert answer.payload == hexbytes(success)
    wrong = hexbytes(request).replace(b"SECRET", b"SECRXT")
    answer = await coap.request(POST, "/api/v1/provision", wrong)
    assert code_text(answer.code) == "4.00" and answer.payload == hexbytes(not_found)
