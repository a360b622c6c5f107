"""PROTOBUF device profiles end to end over real UDP: a device played by a test client that encodes
and decodes with classes protoc generated from the same schemas (and from ThingsBoard's device-facing
messages), against a node whose profile was saved in ThingsBoard's JSON shape."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from txthings import coap as tx

from tests.coapclient import ACK, CON, GET, POST, code_text
from tests.protodevice import generate, thingsboard, typed

TOKEN = "PB-TOKEN"
TELEMETRY, ATTRIBUTES, RPC = (f"/api/v1/{TOKEN}/{feature}" for feature in ("telemetry", "attributes", "rpc"))
PROVISION = "/api/v1/provision"


def protobuf_profile(name="sensors", **schemas):
    """A PROTOBUF profile as ThingsBoard (and tb-rest-client) saves it; schemas not given: defaults."""
    payload = {"transportPayloadType": "PROTOBUF", **schemas}
    return {"name": name, "transportType": "COAP",
            "profileData": {"transportConfiguration": {
                "type": "COAP", "coapDeviceTypeConfiguration": {"coapDeviceType": "DEFAULT",
                                                                "transportPayloadTypeConfiguration": payload},
                "clientSettings": {"powerMode": "DRX"}}}}


def schemas_of(profile):
    return profile["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"]


class Device:
    """The protobuf side of one test: generated classes of the profile's schemas and ThingsBoard's."""

    def __init__(self, tmp_path, profile, device):
        given = schemas_of(profile)
        self.telemetry = generate(tmp_path, given["deviceTelemetryProtoSchema"])
        self.attributes = generate(tmp_path, given["deviceAttributesProtoSchema"])
        self.rpc_request = generate(tmp_path, given["deviceRpcRequestProtoSchema"])
        self.rpc_response = generate(tmp_path, given["deviceRpcResponseProtoSchema"])
        self.tb = thingsboard(tmp_path)
        self.json, self.id = device, device["id"]["id"]


@pytest_twisted.async_fixture
async def pb(rest, tmp_path):
    status, profile = await rest.post("/api/deviceProfile", protobuf_profile())
    assert status == 200, profile
    status, device = await rest.post(f"/api/device?accessToken={TOKEN}", {"name": "pb-1", "type": "sensors"})
    assert status == 200, device
    return Device(tmp_path, profile, device)


async def latest(rest, device_id):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries?useStrictDataTypes=true")
    assert status == 200
    return {key: points[0]["value"] for key, points in body.items()}


async def attributes(rest, device_id, scope):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/{scope}")
    assert status == 200
    return {item["key"]: item["value"] for item in body}


async def notification(client, token, timeout=3.0):
    while True:
        message = await client.receive(timeout)
        if message.token == token:
            if message.mtype == CON:
                client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
            return message


def accept(value):
    return [(tx.ACCEPT, bytes([value]) if value else b"")]


# -- the profile ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_profile_answers_in_thingsboards_shape_with_defaults_filled(rest, pb):
    status, page = await rest.get("/api/deviceProfiles?pageSize=10&page=0")
    (profile,) = [p for p in page["data"] if p["name"] == "sensors"]
    assert profile["transportType"] == "COAP"
    transport = profile["profileData"]["transportConfiguration"]
    assert transport["clientSettings"] == {"powerMode": "DRX"}  # kept as given
    given = schemas_of(profile)
    assert given["transportPayloadType"] == "PROTOBUF"
    assert "message SensorDataReading" in given["deviceTelemetryProtoSchema"]
    assert "message RpcResponseMsg" in given["deviceRpcResponseProtoSchema"]
    (default,) = [p for p in page["data"] if p["name"] == "default"]
    assert default["transportType"] == "DEFAULT"
    assert default["profileData"]["transportConfiguration"] == {"type": "DEFAULT"}


@pytest.mark.parametrize("schema, fragment", [
    ('syntax = "proto3";\nmessage A {\n  int32 x = 1\n}', 'deviceTelemetryProtoSchema: 4:1: Expected ";"'),
    ('syntax = "proto2";\nmessage A { optional int32 x = 1; }', 'syntax = "proto3"'),
    ('syntax = "proto3";\nimport "other.proto";\nmessage A { int32 x = 1; }', "2:1: imports are not supported"),
    ('syntax = "proto3";\noption java_package = "x";\nmessage A { int32 x = 1; }', "2:1: options are not supported"),
    ('syntax = "proto3";\nmessage A {\n  int32 x = 1 [deprecated = true];\n}', "3:15: field options are not"),
    ('syntax = "proto3";\nmessage A { required int32 x = 1; }', "2:22: Required fields are not allowed"),
    ('syntax = "proto3";\nmessage A { int32 x = 1 [default = 5]; }', "Explicit default values"),
    ('syntax = "proto3";\nenum E { A = 0; }', "at least one message"),
])
@pytest_twisted.ensureDeferred
async def test_bad_schema_is_400_with_the_compilers_message_and_position(rest, schema, fragment):
    status, body = await rest.post("/api/deviceProfile", protobuf_profile("bad", deviceTelemetryProtoSchema=schema))
    assert status == 400 and fragment in body["message"], body
    assert (await rest.get("/api/deviceProfiles?pageSize=10&page=0"))[1]["totalElements"] == 1  # nothing saved


@pytest.mark.parametrize("transport, fragment", [
    ({"type": "MQTT"}, "DEFAULT or COAP"),
    ({"type": "COAP", "coapDeviceTypeConfiguration": {"coapDeviceType": "EFENTO"}}, "Efento"),
    ({"type": "COAP", "coapDeviceTypeConfiguration": {"transportPayloadTypeConfiguration": {
        "transportPayloadType": "XML"}}}, "JSON or PROTOBUF"),
    ({"type": "COAP", "coapDeviceTypeConfiguration": {"transportPayloadTypeConfiguration": {
        "transportPayloadType": "PROTOBUF", "deviceRpcRequestProtoSchema": 5}}}, "must be text"),
    ({"type": "COAP", "clientSettings": []}, "clientSettings"),
])
@pytest_twisted.ensureDeferred
async def test_bad_transport_configuration_is_400(rest, transport, fragment):
    status, body = await rest.post("/api/deviceProfile", {"name": "bad", "profileData": {"transportConfiguration": transport}})
    assert status == 400 and fragment in body["message"], body


# -- uploads -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_telemetry_of_the_default_schema(coap, rest, pb):
    reading = pb.telemetry.SensorDataReading(temperature=21.5)
    reading.innerObject.key1 = "on"
    reading.innerObject.key4 = 7
    answer = await coap.request(POST, TELEMETRY, reading.SerializeToString(), content_format=42)
    assert code_text(answer.code) == "2.01"
    # optional and unset: absent (humidity, key2, key3, key5); the nested message as a JSON value
    assert await latest(rest, pb.id) == {"temperature": 21.5, "innerObject": {"key1": "on", "key4": 7}}


CUSTOM = """syntax = "proto3";
package meter;
enum Mode { OFF = 0; ECO = 1; }
message Reading {
  uint64 counter = 2;
  int64 delta = 1;
  string serial = 3;
  bool ok = 4;
  optional float ratio = 5;
  Mode mode = 6;
  bytes raw = 7;
  repeated int32 samples = 8;
  map<string, double> phases = 9;
  sint64 small = 10;
  optional string level = 11;
}
"""


@pytest_twisted.ensureDeferred
async def test_telemetry_types_as_json_gives_them(coap, rest, tmp_path):
    body = protobuf_profile("meters", deviceTelemetryProtoSchema=CUSTOM)
    status, profile = await rest.post("/api/deviceProfile", body)
    assert status == 200, profile
    status, device = await rest.post("/api/device?accessToken=METER", {"name": "m-1", "type": "meters"})
    meter = generate(tmp_path, CUSTOM)
    reading = meter.Reading(counter=2**64 - 1, delta=-(2**62), serial="0042", ratio=0.1, mode=meter.ECO,
                            raw=b"\x00\xff", samples=[1, 2], small=-3, level="21.5")
    reading.phases["L1"] = 230.0
    answer = await coap.request(POST, "/api/v1/METER/telemetry", reading.SerializeToString())  # no Content-Format
    assert code_text(answer.code) == "2.01"
    got = await latest(rest, device["id"]["id"])
    assert got == {
        "delta": -(2**62),  # 64-bit integers as numbers (LONG)
        "counter": str(2**64 - 1),  # beyond 64 signed bits: STRING of its digits, as a JSON number would be
        "serial": 42,  # a numeric string is a LONG, as in JSON
        "ok": False,  # no presence: present with its default
        "ratio": 0.1,  # a float32 as its shortest decimal
        "mode": "ECO", "raw": "AP8=", "samples": [1, 2], "phases": {"L1": 230.0}, "small": -3,
        "level": 21.5,
    }
    status, history = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                      "?keys=samples,ok&useStrictDataTypes=false")
    assert history["samples"][0]["value"] == "[1,2]" and history["ok"][0]["value"] == "false"


TIMESTAMPED = """syntax = "proto3";
message Values { double t = 1; }
message Point { int64 ts = 1; Values values = 2; }
"""


@pytest_twisted.ensureDeferred
async def test_a_root_with_ts_and_values_is_timestamped_as_in_json(coap, rest, tmp_path):
    status, _ = await rest.post("/api/deviceProfile", protobuf_profile("stamped", deviceTelemetryProtoSchema=TIMESTAMPED))
    assert status == 200
    status, device = await rest.post("/api/device?accessToken=STAMP", {"name": "s-1", "type": "stamped"})
    module = generate(tmp_path, TIMESTAMPED)
    point = module.Point(ts=1700000000000, values=module.Values(t=20.5))  # the last message is the root
    assert code_text((await coap.request(POST, "/api/v1/STAMP/telemetry", point.SerializeToString())).code) == "2.01"
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                  "?keys=t&startTs=0&endTs=9999999999999&useStrictDataTypes=true")
    assert body["t"] == [{"ts": 1700000000000, "value": 20.5}]


@pytest_twisted.ensureDeferred
async def test_a_body_that_does_not_decode_is_400_and_stores_nothing(coap, rest, pb):
    good = pb.telemetry.SensorDataReading(temperature=1.0).SerializeToString()
    for payload in (good[:-3], b"\xff\xff\xff", good + b"\x0a"):
        answer = await coap.request(POST, TELEMETRY, payload, content_format=42)
        assert code_text(answer.code) == "4.00" and answer.opt.content_format == 0
        assert b"telemetry.SensorDataReading" in answer.payload, answer.payload
    nan = pb.telemetry.SensorDataReading(temperature=float("nan"), humidity=3.0).SerializeToString()
    answer = await coap.request(POST, TELEMETRY, nan)
    assert code_text(answer.code) == "4.00" and b"'temperature' is not a finite number" in answer.payload
    assert await latest(rest, pb.id) == {}  # nothing half-stored


@pytest_twisted.ensureDeferred
async def test_client_attributes_of_the_default_schema(coap, rest, pb):
    config = pb.attributes.SensorConfiguration(firmwareVersion="1.2.0")
    answer = await coap.request(POST, ATTRIBUTES, config.SerializeToString(), content_format=42)
    assert code_text(answer.code) == "2.01"
    assert await attributes(rest, pb.id, "CLIENT_SCOPE") == {"firmwareVersion": "1.2.0"}


# -- attribute requests and observations ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_attribute_request_answers_get_attribute_response_msg(coap, rest, pb):
    assert code_text((await coap.request(GET, ATTRIBUTES)).code) == "4.04"  # nothing at all, as in JSON
    await coap.request(POST, ATTRIBUTES, pb.attributes.SensorConfiguration(serialNumber="S1").SerializeToString())
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{pb.id}/SHARED_SCOPE", {"interval": 30, "cfg": {"a": 1}})
    answer = await coap.request(GET, ATTRIBUTES, query=["clientKeys=serialNumber", "sharedKeys=interval,cfg"])
    assert code_text(answer.code) == "2.05" and answer.opt.content_format == 42
    message = pb.tb.GetAttributeResponseMsg.FromString(answer.payload)
    assert message.requestId == 0 and message.isMultipleAttributesRequest and not message.sharedStateMsg
    assert [(a.kv.key, typed(a.kv)) for a in message.clientAttributeList] == [("serialNumber", "S1")]
    shared = {a.kv.key: (a.kv.type, typed(a.kv)) for a in message.sharedAttributeList}
    assert shared == {"interval": (pb.tb.LONG_V, 30), "cfg": (pb.tb.JSON_V, '{"a":1}')}
    assert all(a.ts > 0 for a in message.sharedAttributeList)
    one = pb.tb.GetAttributeResponseMsg.FromString((await coap.request(GET, ATTRIBUTES, query=["sharedKeys=interval"])).payload)
    assert not one.isMultipleAttributesRequest and not one.clientAttributeList


@pytest_twisted.ensureDeferred
async def test_attribute_observation_in_protobuf(coap, rest, pb):
    first = await coap.request(GET, ATTRIBUTES, observe=0, token=b"pbobs")
    assert code_text(first.code) == "2.05" and first.opt.content_format == 42 and len(first.payload) == 0  # none yet
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{pb.id}/SHARED_SCOPE", {"interval": 60, "on": True})
    change = await notification(coap, b"pbobs")
    assert change.opt.observe == 1 and change.opt.content_format == 42
    updated = pb.tb.AttributeUpdateNotificationMsg.FromString(change.payload)
    assert {u.kv.key: typed(u.kv) for u in updated.sharedUpdated} == {"interval": 60, "on": True}
    status, _ = await rest.delete(f"/api/plugins/telemetry/DEVICE/{pb.id}/SHARED_SCOPE?keys=on")
    deleted = pb.tb.AttributeUpdateNotificationMsg.FromString((await notification(coap, b"pbobs")).payload)
    assert list(deleted.sharedDeleted) == ["on"] and not deleted.sharedUpdated
    again = await coap.request(GET, ATTRIBUTES, observe=0, token=b"pbobs2")  # the whole shared set first
    snapshot = pb.tb.AttributeUpdateNotificationMsg.FromString(again.payload)
    assert {u.kv.key: typed(u.kv) for u in snapshot.sharedUpdated} == {"interval": 60}


# -- RPC ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_server_side_rpc_as_the_profiles_messages(coap, rest, pb):
    first = await coap.request(GET, RPC, observe=0, token=b"pbrpc")
    assert code_text(first.code) == "2.05" and first.opt.content_format == 42 and len(first.payload) == 0
    call = defer.ensureDeferred(rest.post(f"/api/rpc/twoway/{pb.id}", {"method": "setGpio", "params": {"pin": 4, "value": 1}}))
    rpc = await notification(coap, b"pbrpc")
    assert rpc.opt.content_format == 42
    request = pb.rpc_request.RpcRequestMsg.FromString(rpc.payload)
    assert request.method == "setGpio" and request.requestId == 1
    assert json.loads(request.params) == {"pin": 4, "value": 1}  # a string field gets the JSON text
    reply = pb.rpc_response.RpcResponseMsg(payload="done").SerializeToString()
    assert code_text((await coap.request(POST, f"{RPC}/{request.requestId}", reply, content_format=42)).code) == "2.01"
    status, answer = await call
    assert status == 200 and answer == {"payload": "done"}  # the response message's JSON mapping


PARAMS_SCHEMA = """syntax = "proto3";
package rpc;
message RpcRequestMsg {
  optional string method = 1;
  optional int32 requestId = 2;
  Params params = 3;
  message Params {
    optional string pin = 1;
    optional int32 value = 2;
  }
}
"""


@pytest_twisted.ensureDeferred
async def test_rpc_params_fill_a_message_field_by_field_and_a_misfit_fails_the_rpc(coap, rest, tmp_path):
    status, profile = await rest.post("/api/deviceProfile", protobuf_profile("gpio", deviceRpcRequestProtoSchema=PARAMS_SCHEMA))
    assert status == 200, profile
    status, device = await rest.post("/api/device?accessToken=GPIO", {"name": "g-1", "type": "gpio"})
    module = generate(tmp_path, PARAMS_SCHEMA)
    await coap.request(GET, "/api/v1/GPIO/rpc", observe=0, token=b"gpio")
    call = defer.ensureDeferred(rest.post(f"/api/rpc/oneway/{device['id']['id']}",
                                          {"method": "setGpio", "params": {"pin": "26", "value": 1, "extra": True}}))
    request = module.RpcRequestMsg.FromString((await notification(coap, b"gpio")).payload)
    assert (await call)[0] == 200
    assert (request.params.pin, request.params.value) == ("26", 1)  # unknown names ignored
    status, body = await rest.post(f"/api/rpc/twoway/{device['id']['id']}",
                                   {"method": "setGpio", "params": {"value": "not a number"}})
    assert status == 502 and "does not fit rpc.RpcRequestMsg" in body["message"], body


@pytest_twisted.ensureDeferred
async def test_client_side_rpc_in_protobuf(coap, pb):
    request = pb.tb.RpcRequest(method="getTime", params='{"tz":"UTC"}').SerializeToString()
    answer = await coap.request(POST, RPC, request, content_format=42)
    assert code_text(answer.code) == "2.05" and answer.opt.content_format == 42
    message = pb.tb.ToServerRpcResponseMsg.FromString(answer.payload)
    assert message.requestId == 0 and not message.error
    assert json.loads(message.payload) == {"method": "getTime", "params": {"tz": "UTC"}}  # the echo rule
    assert code_text((await coap.request(POST, RPC, pb.tb.RpcRequest(params="x").SerializeToString())).code) == "4.00"


# -- claim, provisioning -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_claim_in_protobuf(coap, rest, pb):
    claim = pb.tb.ClaimDevice(secretKey="s3cret", durationMs=60000).SerializeToString()
    assert code_text((await coap.request(POST, f"/api/v1/{TOKEN}/claim", claim, content_format=42)).code) == "2.01"
    status, customer = await rest.post("/api/customer", {"title": "ACME"})
    status, body = await rest.call("POST", "/api/customer/device/pb-1/claim", {"secretKey": "s3cret"},
                                   key=customer["apiKey"])
    assert status == 200 and body["response"] == "SUCCESS"


@pytest_twisted.ensureDeferred
async def test_provisioning_answers_in_the_requests_format(coap, rest, tmp_path):
    tb = thingsboard(tmp_path)
    status, _ = await rest.post("/api/deviceProfile", {**protobuf_profile("auto"), "provisionType": "ALLOW_CREATE_NEW_DEVICES",
                                                       "provisionDeviceKey": "KEY", "provisionDeviceSecret": "SECRET"})
    assert status == 200
    request = tb.ProvisionDeviceRequestMsg(deviceName="pb-auto", provisionDeviceCredentialsMsg=tb.ProvisionDeviceCredentialsMsg(
        provisionDeviceKey="KEY", provisionDeviceSecret="SECRET"))
    request.credentialsDataProto.validateDeviceTokenRequestMsg.token = "CHOSEN"
    answer = await coap.request(POST, PROVISION, request.SerializeToString())  # not JSON: tried as Protobuf
    assert code_text(answer.code) == "2.01" and answer.opt.content_format == 42
    done = tb.ProvisionDeviceResponseMsg.FromString(answer.payload)
    assert (done.status, done.credentialsType, done.credentialsValue) == (tb.SUCCESS, tb.ACCESS_TOKEN, "CHOSEN")
    status, device = await rest.get("/api/tenant/devices?deviceName=pb-auto")
    assert device["type"] == "auto"
    wrong = tb.ProvisionDeviceRequestMsg(provisionDeviceCredentialsMsg=tb.ProvisionDeviceCredentialsMsg(
        provisionDeviceKey="KEY", provisionDeviceSecret="nope"))
    answer = await coap.request(POST, PROVISION, wrong.SerializeToString(), content_format=42)
    assert code_text(answer.code) == "4.00" and answer.opt.content_format == 42
    assert tb.ProvisionDeviceResponseMsg.FromString(answer.payload).status == tb.NOT_FOUND
    again = await coap.request(POST, PROVISION, request.SerializeToString())  # the name is taken
    assert tb.ProvisionDeviceResponseMsg.FromString(again.payload).status == tb.FAILURE
    answer = await coap.request(POST, PROVISION, b'{"provisionDeviceKey":"KEY","provisionDeviceSecret":"nope"}')
    assert answer.opt.content_format == 50 and json.loads(answer.payload)["status"] == "NOT_FOUND"  # JSON first


# -- formats and changes --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_accept_must_be_protobuf_where_the_answer_has_a_body(coap, pb):
    assert code_text((await coap.request(GET, ATTRIBUTES, extra_options=accept(50))).code) == "4.06"
    assert code_text((await coap.request(GET, ATTRIBUTES, extra_options=accept(42))).code) == "4.04"
    reading = pb.telemetry.SensorDataReading(temperature=1.0).SerializeToString()
    assert code_text((await coap.request(POST, TELEMETRY, reading, content_format=50,
                                         extra_options=accept(0))).code) == "2.01"  # no body: Accept ignored


@pytest_twisted.ensureDeferred
async def test_a_profile_change_applies_to_the_next_request_and_observations_keep_their_format(coap, rest, pb):
    await coap.request(GET, ATTRIBUTES, observe=0, token=b"keep")
    status, profiles = await rest.get("/api/deviceProfiles?pageSize=10&page=0")
    (profile,) = [p for p in profiles["data"] if p["name"] == "sensors"]
    profile["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"] = {"transportPayloadType": "JSON"}
    assert (await rest.post("/api/deviceProfile", profile))[0] == 200
    assert code_text((await coap.request(POST, TELEMETRY, b'{"t":1}')).code) == "2.01"  # JSON now
    assert await latest(rest, pb.id) == {"t": 1}
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{pb.id}/SHARED_SCOPE", {"mode": "eco"})
    change = await notification(coap, b"keep")  # registered while PROTOBUF: still Protobuf
    assert change.opt.content_format == 42
    assert typed(pb.tb.AttributeUpdateNotificationMsg.FromString(change.payload).sharedUpdated[0].kv) == "eco"
    fresh = await coap.request(GET, ATTRIBUTES, observe=0, token=b"fresh")
    assert fresh.opt.content_format == 50 and json.loads(fresh.payload) == {"mode": "eco"}


@pytest_twisted.ensureDeferred
async def test_a_device_moved_to_a_protobuf_profile_speaks_it_next(coap, rest, pb):
    status, device = await rest.post("/api/device?accessToken=MOVER", {"name": "mover"})
    assert code_text((await coap.request(POST, "/api/v1/MOVER/telemetry", b'{"t":1}')).code) == "2.01"
    assert (await rest.post("/api/device", {**device, "type": "sensors"}))[0] == 200
    reading = pb.telemetry.SensorDataReading(temperature=3.5).SerializeToString()
    assert code_text((await coap.request(POST, "/api/v1/MOVER/telemetry", reading)).code) == "2.01"
    assert (await latest(rest, device["id"]["id"]))["temperature"] == 3.5


@pytest_twisted.ensureDeferred
async def test_schemas_compile_once_per_profile_version(node, coap, rest, pb):
    compiled = node.core.payloads.compilations
    reading = pb.telemetry.SensorDataReading(temperature=1.0).SerializeToString()
    for _ in range(20):
        assert code_text((await coap.request(POST, TELEMETRY, reading)).code) == "2.01"
    node.core.payloads.forget(pb.json["id"]["id"])  # as after a restart or a change elsewhere: same version
    assert code_text((await coap.request(POST, TELEMETRY, reading)).code) == "2.01"
    assert node.core.payloads.compilations == compiled  # kept by version, never per request
    await task.deferLater(reactor, 0, lambda: None)
