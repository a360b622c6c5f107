"""The device API over real UDP: the device API's answers, codes, diagnostics and order of checks."""

import json

import pytest
import pytest_twisted
from txthings import coap as tx

from tests.coapclient import ACK, DELETE, GET, NON, POST, PUT, code_text, open_client

TELEMETRY = "/api/v1/TOKEN-1/telemetry"
ATTRIBUTES = "/api/v1/TOKEN-1/attributes"


async def latest(rest, device, strict=True):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                  f"?useStrictDataTypes={'true' if strict else 'false'}")
    assert status == 200
    return {key: points[0]["value"] for key, points in body.items()}


async def history(rest, device, key):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                  f"?keys={key}&startTs=0&endTs=9999999999999&limit=1000&orderBy=ASC&useStrictDataTypes=true")
    assert status == 200
    return [(p["ts"], p["value"]) for p in body.get(key, [])]


def diagnostic(answer):
    assert answer.opt.content_format == 0
    assert 0 < len(answer.payload) <= 96
    return answer.payload.decode()


@pytest_twisted.ensureDeferred
async def test_telemetry_con_is_piggybacked_and_committed(coap, rest, device):
    answer = await coap.request(POST, TELEMETRY, b'{"temperature":21.5}', mid=4242, token=b"tk")
    assert code_text(answer.code) == "2.01"
    assert (answer.mtype, answer.mid, answer.token) == (ACK, 4242, b"tk") and not answer.payload
    assert await latest(rest, device) == {"temperature": 21.5}


@pytest_twisted.ensureDeferred
async def test_non_request_gets_non_answer_and_no_ack(coap, device):
    answer = await coap.request(POST, TELEMETRY, b'{"a":1}', mtype=NON)
    assert answer.mtype == NON and code_text(answer.code) == "2.01"
    assert await coap.silence(0.2)
    assert [m.mtype for m in coap.received] == [NON]


@pytest_twisted.ensureDeferred
async def test_telemetry_shapes(coap, rest, device):
    for payload in (b'{"a":1}', b'[{"b":2},{"c":3}]', b'{"ts":1000,"values":{"d":4}}',
                    b'[{"ts":2000,"values":{"e":5}},{"f":6}]', b'{"ts":3000,"values":{"g":7},"other":1}'):
        assert code_text((await coap.request(POST, TELEMETRY, payload)).code) == "2.01", payload
    assert await latest(rest, device) == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}
    assert await history(rest, device, "d") == [(1000, 4)]
    assert await history(rest, device, "g") == [(3000, 7)]


@pytest_twisted.ensureDeferred
async def test_empty_telemetry_is_created_and_stores_nothing(coap, rest, device):
    for payload in (b"[]", b"{}"):
        assert code_text((await coap.request(POST, TELEMETRY, payload)).code) == "2.01"
    assert await latest(rest, device) == {}


@pytest_twisted.ensureDeferred
async def test_ts_without_values_is_plain_data(coap, rest, device):
    assert code_text((await coap.request(POST, TELEMETRY, b'{"ts":5,"x":1}')).code) == "2.01"
    assert await latest(rest, device) == {"ts": 5, "x": 1}


@pytest_twisted.ensureDeferred
async def test_typing_over_the_wire(coap, rest, device):
    payload = b'{"a":4.2e1,"b":"0042","c":42.0,"d":1e30,"e":"21.5","f":null,"g":{"x":[1,"y"]},"h":false}'
    assert code_text((await coap.request(POST, TELEMETRY, payload)).code) == "2.01"
    assert await latest(rest, device) == {"a": 42, "b": 42, "c": 42.0, "d": "1e30", "e": 21.5,
                                          "g": {"x": [1, "y"]}, "h": False}
    as_text = await latest(rest, device, strict=False)
    assert (as_text["a"], as_text["c"], as_text["g"], as_text["h"]) == ("42", "42.0", '{"x":[1,"y"]}', "false")


@pytest.mark.parametrize("payload, fragment", [
    (b'{"a":', "JSON"),
    (b'{"a":NaN}', "NaN"),
    (b'{"a":1,"a":2}', "duplicate"),
    (b'{"a":1e400}', "range"),
    (b'{"ts":"abc","values":{"a":1}}', "ts"),
    (b'{"ts":1.5,"values":{"a":1}}', "ts"),
    (b'{"ts":-1,"values":{"a":1}}', "ts"),
    (b'{"ts":1,"values":[1]}', "values"),
    (b'"text"', ""),
    (b"{'a':1}", ""),
    (b'{"":1}', "key"),
])
@pytest_twisted.ensureDeferred
async def test_bad_telemetry_is_400_with_diagnostic(coap, rest, device, payload, fragment):
    answer = await coap.request(POST, TELEMETRY, payload)
    assert code_text(answer.code) == "4.00"
    assert fragment.lower() in diagnostic(answer).lower()
    assert await latest(rest, device) == {}


@pytest_twisted.ensureDeferred
async def test_one_request_is_stored_whole_or_not_at_all(coap, rest, device):
    answer = await coap.request(POST, TELEMETRY, b'[{"a":1},{"b":"x","c":NaN}]')
    assert code_text(answer.code) == "4.00"
    assert await latest(rest, device) == {}


@pytest.mark.parametrize("path, code", [
    ("/api/v2/TOKEN-1/telemetry", "4.04"),
    ("/other", "4.04"),
    ("/", "4.04"),
    ("/api/v1", "4.00"),
    ("/api/v1/TOKEN-1", "4.00"),
    ("/api/v1/TOKEN-1/nonsense", "4.00"),
    ("/api/v1/TOKEN-1/telemetry/extra", "4.00"),
])
@pytest_twisted.ensureDeferred
async def test_path_errors(coap, device, path, code):
    answer = await coap.request(POST, path, b'{"a":1}')
    assert code_text(answer.code) == code
    diagnostic(answer)


@pytest_twisted.ensureDeferred
async def test_feature_segment_is_case_insensitive(coap, rest, device):
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-1/TeleMetry", b'{"z":1}')).code) == "2.01"
    assert await latest(rest, device) == {"z": 1}


@pytest.mark.parametrize("method, path", [
    (PUT, TELEMETRY), (DELETE, TELEMETRY), (GET, TELEMETRY), (5, TELEMETRY), (7, ATTRIBUTES),
    (PUT, ATTRIBUTES), (POST, "/.well-known/core"),
])
@pytest_twisted.ensureDeferred
async def test_method_not_allowed(coap, device, method, path):
    answer = await coap.request(method, path, b'{"a":1}')
    assert code_text(answer.code) == "4.05"
    diagnostic(answer)


@pytest_twisted.ensureDeferred
async def test_unknown_token_is_401(coap, device):
    answer = await coap.request(POST, "/api/v1/NOPE/telemetry", b'{"a":1}')
    assert code_text(answer.code) == "4.01"
    assert "token" in diagnostic(answer)


@pytest_twisted.ensureDeferred
async def test_body_over_limit_is_413_with_size1(start_node, rest):
    small = await start_node("--max-body", "100")
    client = await open_client(("127.0.0.1", small.coap_address[1]))
    await small.core.devices.create("small", token="TOKEN-1")
    answer = await client.request(POST, TELEMETRY, b'{"a":"' + b"x" * 100 + b'"}')
    assert code_text(answer.code) == "4.13"
    assert answer.opt.getOption(tx.SIZE1)[0].value == 100
    assert "100" in diagnostic(answer)
    assert code_text((await client.request(POST, TELEMETRY, b'{"a":"' + b"x" * 80 + b'"}')).code) == "2.01"
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_datagram_over_8k_is_read_whole(coap, rest, device):
    value = "y" * 20000
    answer = await coap.request(POST, TELEMETRY, json.dumps({"big": value}).encode())
    assert code_text(answer.code) == "2.01"
    assert (await latest(rest, device))["big"] == value


@pytest.mark.parametrize("content_format, payload, code", [
    (None, b'{"a":1}', "2.01"), (0, b'{"a":1}', "2.01"), (50, b'{"a":1}', "2.01"),
    (60, bytes.fromhex("a1616101"), "2.01"),  # CBOR {"a": 1}
    (60, b'{"a":1}', "4.00"),  # JSON is not CBOR
    (42, b'{"a":1}', "4.15"), (41, b'{"a":1}', "4.15")])
@pytest_twisted.ensureDeferred
async def test_content_formats(coap, device, content_format, payload, code):
    answer = await coap.request(POST, TELEMETRY, payload, content_format=content_format)
    assert code_text(answer.code) == code


@pytest.mark.parametrize("method, path, payload, extra, code", [
    (PUT, "/api/v1/NOPE/telemetry", b"{", {}, "4.05"),            # method before token
    (POST, "/api/v1/NOPE/nonsense", b"{", {}, "4.00"),            # path before token
    (POST, "/api/v1/NOPE/telemetry", b"{", {}, "4.01"),           # token before payload
    (POST, "/api/v1/NOPE/telemetry", b"x" * 200, {}, "4.01"),     # token before size
    (POST, TELEMETRY, b"x" * 200, {"content_format": 60}, "4.13"),  # size before format
    (POST, TELEMETRY, b"{", {"content_format": 42}, "4.15"),      # format before payload
])
@pytest_twisted.ensureDeferred
async def test_order_of_checks(start_node, method, path, payload, extra, code):
    small = await start_node("--max-body", "100")
    client = await open_client(("127.0.0.1", small.coap_address[1]))
    await small.core.devices.create("small", token="TOKEN-1")
    answer = await client.request(method, path, payload, **extra)
    assert code_text(answer.code) == code
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_observe_on_post_is_400(coap, device):
    answer = await coap.request(POST, TELEMETRY, b'{"a":1}', observe=0)
    assert code_text(answer.code) == "4.00"


@pytest_twisted.ensureDeferred
async def test_client_attributes_and_attribute_request(coap, rest, device):
    answer = await coap.request(POST, ATTRIBUTES, b'{"fw":"1.2a","n":"7","ok":true}')
    assert code_text(answer.code) == "2.01"
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE",
                                {"target": 20.5, "mode": "eco"})
    assert status == 200

    async def ask(*query):
        answer = await coap.request(GET, ATTRIBUTES, query=list(query))
        body = json.loads(answer.payload) if code_text(answer.code) == "2.05" else None
        if body is not None:
            assert answer.opt.content_format == 50
        return code_text(answer.code), body

    assert await ask() == ("2.05", {"client": {"fw": "1.2a", "n": 7, "ok": True},
                                    "shared": {"target": 20.5, "mode": "eco"}})
    assert await ask("clientKeys=fw,n", "sharedKeys=mode") == ("2.05", {"client": {"fw": "1.2a", "n": 7},
                                                                        "shared": {"mode": "eco"}})
    assert await ask("sharedKeys=target") == ("2.05", {"shared": {"target": 20.5}})
    assert await ask("clientKeys=", "sharedKeys=mode") == ("2.05", {"shared": {"mode": "eco"}})
    assert await ask("clientKeys=fw", "other=1") == ("2.05", {"client": {"fw": "1.2a"}})
    assert await ask("clientKeys=missing", "sharedKeys=mode") == ("2.05", {"shared": {"mode": "eco"}})
    code, _ = await ask("clientKeys=missing")
    assert code == "4.04"


@pytest_twisted.ensureDeferred
async def test_attribute_request_with_nothing_stored_is_404(coap, device):
    answer = await coap.request(GET, ATTRIBUTES)
    assert code_text(answer.code) == "4.04"
    diagnostic(answer)


@pytest.mark.parametrize("payload", [b"[]", b'[{"a":1}]', b'"x"', b"{", b'{"a":1,"a":1}'])
@pytest_twisted.ensureDeferred
async def test_attributes_accept_objects_only(coap, device, payload):
    assert code_text((await coap.request(POST, ATTRIBUTES, payload)).code) == "4.00"


@pytest_twisted.ensureDeferred
async def test_well_known_core(coap):
    answer = await coap.request(GET, "/.well-known/core")
    assert code_text(answer.code) == "2.05"
    assert answer.opt.content_format == 40
    assert len(answer.payload) < 512 and b"</api/v1" in answer.payload


@pytest_twisted.ensureDeferred
async def test_token_rotation_and_deletion_take_effect_at_once(coap, rest, device):
    device_id = device["id"]["id"]
    assert code_text((await coap.request(POST, TELEMETRY, b'{"a":1}')).code) == "2.01"  # token now cached
    status, _ = await rest.post("/api/device/credentials", {"deviceId": {"id": device_id},
                                                            "credentialsType": "ACCESS_TOKEN",
                                                            "credentialsId": "TOKEN-2"})
    assert status == 200
    assert code_text((await coap.request(POST, TELEMETRY, b'{"a":2}')).code) == "4.01"
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-2/telemetry", b'{"a":3}')).code) == "2.01"
    status, _ = await rest.delete(f"/api/device/{device_id}")
    assert status == 200
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-2/telemetry", b'{"a":4}')).code) == "4.01"


@pytest_twisted.ensureDeferred
async def test_duplicate_con_is_processed_once_and_answered_again(coap, rest, device):
    first = await coap.request(POST, TELEMETRY, b'{"ts":77,"values":{"dup":1}}', mid=999, token=b"a")
    again = await coap.request(POST, TELEMETRY, b'{"ts":77,"values":{"dup":1}}', mid=999, token=b"a")
    assert code_text(first.code) == code_text(again.code) == "2.01"
    assert again.mid == 999 and again.mtype == ACK
    status, stats = await rest.get("/api/admin/stats")
    assert stats["coap"]["duplicates"] == 1
    assert stats["store"]["writes"] >= 1
    assert await history(rest, device, "dup") == [(77, 1)]


@pytest_twisted.ensureDeferred
async def test_rate_limits_answer_429_with_max_age(start_node):
    limited = await start_node("--device-rate-limit", "3:60", "--peer-rate-limit", "5:60")
    await limited.core.devices.create("a", token="TOKEN-1")
    await limited.core.devices.create("b", token="TOKEN-2")
    client = await open_client(("127.0.0.1", limited.coap_address[1]))
    codes = [code_text((await client.request(POST, TELEMETRY, b'{"a":1}')).code) for _ in range(4)]
    assert codes == ["2.01", "2.01", "2.01", "4.29"]
    refused = await client.request(POST, TELEMETRY, b'{"a":1}')
    assert 1 <= refused.opt.getOption(tx.MAX_AGE)[0].value <= 60 and diagnostic(refused)
    # another device from the same address: its own device limit, but the address's limit of 5
    # (3 used; refused requests use none, neither of the device's limit nor of the address's)
    other = [code_text((await client.request(POST, "/api/v1/TOKEN-2/telemetry", b"{}")).code) for _ in range(3)]
    assert other == ["2.01", "2.01", "4.29"]
    assert code_text((await client.request(POST, "/api/v1/NOPE/telemetry", b"{}")).code) == "4.01"  # token first
    fresh = await open_client(("127.0.0.1", limited.coap_address[1]))  # another source port
    assert code_text((await fresh.request(POST, "/api/v1/TOKEN-2/telemetry", b"{}")).code) == "2.01"
    await client.port.stopListening()
    await fresh.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_accept_other_than_json_or_cbor_is_406(coap, device):
    accept = lambda value: [(tx.ACCEPT, bytes([value]))]  # noqa: E731
    assert code_text((await coap.request(GET, ATTRIBUTES, extra_options=accept(42))).code) == "4.06"
    assert code_text((await coap.request(GET, ATTRIBUTES, extra_options=accept(50))).code) == "4.04"  # nothing yet
    assert code_text((await coap.request(GET, ATTRIBUTES, extra_options=accept(60))).code) == "4.04"
    assert code_text((await coap.request(GET, "/.well-known/core", extra_options=accept(50))).code) == "4.06"
    assert code_text((await coap.request(GET, "/.well-known/core", extra_options=accept(40))).code) == "2.05"


@pytest_twisted.ensureDeferred
async def test_accept_does_not_matter_for_answers_without_body(coap, device):
    accept_text = [(tx.ACCEPT, b"")]  # Accept: 0 (text/plain)
    assert code_text((await coap.request(POST, TELEMETRY, b'{"a":1}', extra_options=accept_text)).code) == "2.01"
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-1/rpc", b'{"method":"m"}',
                                          extra_options=accept_text)).code) == "4.06"


@pytest_twisted.ensureDeferred
async def test_rate_limit_comes_before_size_for_uploads_too(start_node):
    limited = await start_node("--device-rate-limit", "1:60", "--max-body", "200")
    await limited.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", limited.coap_address[1]))
    assert code_text((await client.request(POST, TELEMETRY, b"{}")).code) == "2.01"
    size1 = [(tx.SIZE1, (1000).to_bytes(2, "big"))]
    answer = await client.request(POST, TELEMETRY, b"x" * 64, block1=(0, True, 2), extra_options=size1)
    assert code_text(answer.code) == "4.29"
    await client.port.stopListening()
