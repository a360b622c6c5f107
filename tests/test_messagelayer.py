"""The message layer: validation, RST, duplicates, piggybacking, block-wise."""

import json
import zlib

import pytest
import pytest_twisted
from twisted.internet import defer, task
from txthings import coap as tx

from hypothesis import given, settings, strategies as st

from tbcoap.coap.codec import BlockOption, Malformed, decode, encode
from tbcoap.coap.recent import RecentMap
from tbcoap.hookspecs import hookimpl
from tests.coapclient import ACK, CON, GET, NON, POST, RST, build, code_text, open_client

TELEMETRY = "/api/v1/TOKEN-1/telemetry"


# -- decoding, without a network --------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"\x40\x01\x00", "shorter"),
    (b"\x80\x01\x00\x01", "version"),
    (b"\x49\x01\x00\x01" + b"t" * 9, "token length"),
    (b"\x44\x01\x00\x01tk", "truncated token"),
    (b"\x40\x02\x00\x01\xb5ab", "truncated option"),
    (b"\x40\x02\x00\x01\xf0", "delta or length"),
    (b"\x40\x02\x00\x01\x0f", "delta or length"),
    (b"\x40\x02\x00\x01\xd0", "delta or length"),
    (b"\x40\x02\x00\x01\xff", "payload marker"),
    (b"\x41\x00\x00\x01t", "empty message"),
])
def test_decode_rejects_malformed(data, reason):
    with pytest.raises(Malformed, match=reason):
        decode(data, ("127.0.0.1", 1))


def test_decode_reads_options_payload_and_unknown_critical():
    data = build(POST, "/a/b", b"xyz", mid=7, token=b"tok", query=["k=v"], content_format=50,
                 extra_options=[(2049, b"?")])
    message = decode(data, ("127.0.0.1", 1))
    assert (message.mid, message.token, message.payload) == (7, b"tok", b"xyz")
    assert message.opt.uri_path == [b"a", b"b"] and message.opt.uri_query == [b"k=v"]
    assert message.opt.content_format == 50
    assert message.unknown_critical == 2049


_OPTIONS = st.lists(st.tuples(st.sampled_from([1, 4, 8, 11, 12, 15, 17, 60, 258, 300, 2049, 65000]),
                              st.binary(max_size=300)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(mtype=st.integers(0, 3), code=st.integers(0, 255), mid=st.integers(0, 0xFFFF), token=st.binary(max_size=8),
       options=_OPTIONS, payload=st.binary(max_size=40))
def test_encode_gives_the_bytes_txthings_gives(mtype, code, mid, token, options, payload):
    message = tx.Message(mtype=mtype, mid=mid, code=code, token=token, payload=payload)
    for number, value in options:
        message.opt.addOption(tx.OpaqueOption(number, value))
    assert encode(message) == message.encode()
    if code:
        again = decode(encode(message), ("h", 1))
        assert (again.mtype, again.code, again.mid, again.token, again.payload) == (mtype, code, mid, token, payload)
        assert [o.number for o in again.opt.optionList()] == sorted(number for number, _ in options)


def test_block_option_encodes_zero_as_empty():
    assert BlockOption(tx.BLOCK2, (0, False, 0)).encode() == b""
    assert BlockOption(tx.BLOCK2, (0, True, 6)).encode() == b"\x0e"
    assert BlockOption(tx.BLOCK2, (300, False, 6)).encode() == b"\x12\xc6"
    message = tx.Message(mtype=CON, mid=1, code=GET, payload=b"")
    message.opt.addOption(BlockOption(tx.BLOCK2, (0, False, 6)))
    again = decode(message.encode(), ("h", 1))
    assert tuple(again.opt.block2) == (0, False, 6)


def test_recent_map_expires_and_caps():
    recent = RecentMap(lifetime=10, cap=3)
    for i in range(3):
        recent.put(i, f"v{i}", now=100.0)
    recent.put(0, "again", now=101.0)
    assert recent.get(0) == "again" and len(recent) == 3
    recent.put(3, "v3", now=102.0)
    assert 0 not in recent and recent.evictions == 1 and len(recent) == 3
    recent.expire(now=111.5)
    assert 3 in recent and 1 not in recent and len(recent) == 1
    recent.expire(now=113.0)
    assert len(recent) == 0


# -- over UDP -------------------------------------------------------------

async def send_raw(coap, data):
    coap.send_raw(data)
    try:
        return await coap.receive(timeout=0.3)
    except defer.TimeoutError:
        return None


@pytest.mark.parametrize("data, answer", [
    (b"\x40\x01", None),                        # under 4 bytes: silence
    (b"\x80\x01\x12\x34", None),                # version 2: silence
    (b"\x49\x01\x12\x34" + b"t" * 9, "RST"),    # CON, token length 9
    (b"\x59\x01\x12\x34" + b"t" * 9, None),     # NON, token length 9
    (b"\x40\x02\x12\x34\xff", "RST"),           # CON, payload marker without payload
    (b"\x50\x02\x12\x34\xff", None),            # NON, same
    (b"\x40\x02\x12\x34\xf0", "RST"),           # CON, option delta 15
    (b"\x40\x00\x12\x34", "RST"),               # empty CON: ping
    (b"\x40\xe0\x12\x34", "RST"),               # CON with a reserved code class
])
@pytest_twisted.ensureDeferred
async def test_malformed_datagrams(node, coap, data, answer):
    got = await send_raw(coap, data)
    if answer is None:
        assert got is None
    else:
        assert (got.mtype, got.mid, got.code, got.token) == (RST, 0x1234, 0, b"")
    assert node.coap.stats().get("malformed", 0) == (0 if data == b"\x40\x00\x12\x34" else 1)
    ping = await coap.request(GET, "/.well-known/core")
    assert code_text(ping.code) == "2.05"


@pytest_twisted.ensureDeferred
async def test_unknown_critical_option_is_402(node, coap, device):
    answer = await coap.request(POST, TELEMETRY, b'{"a":1}', extra_options=[(2049, b"x")])
    assert code_text(answer.code) == "4.02" and answer.mtype == ACK
    elective = await coap.request(POST, TELEMETRY, b'{"a":1}', extra_options=[(2050, b"x")])
    assert code_text(elective.code) == "2.01"


@pytest_twisted.ensureDeferred
async def test_unknown_critical_option_in_non_is_dropped(coap, device):
    coap.send_raw(build(POST, TELEMETRY, b'{"a":1}', mtype=NON, mid=5, token=b"n", extra_options=[(9, b"x")]))
    assert await coap.silence(0.3)


class SlowAuth:
    """An auth plugin that says "not mine" after ``delay`` seconds."""

    def __init__(self, reactor, delay):
        self.reactor, self.delay, self.asked = reactor, delay, []

    @hookimpl(tryfirst=True)
    def tbcoap_authenticate(self, token):
        self.asked.append(token)
        return task.deferLater(self.reactor, self.delay, lambda: None)


@pytest_twisted.ensureDeferred
async def test_slow_answer_gets_empty_ack_then_separate_con(start_node, rest):
    from twisted.internet import reactor

    slow = await start_node("--piggyback-timeout", "50")
    slow.plugins.register(SlowAuth(reactor, 0.3), name="slow-auth")
    await slow.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", slow.coap_address[1]))
    answer = await client.request(POST, TELEMETRY, b'{"a":1}', mid=77, token=b"tok")
    empty = client.received[0]
    assert (empty.mtype, empty.mid, empty.code, empty.token) == (ACK, 77, 0, b"")
    assert answer.mtype == CON and answer.mid != 77 and answer.token == b"tok"
    assert code_text(answer.code) == "2.01"
    await task.deferLater(reactor, 0.1, lambda: None)
    assert slow.coap.stats()["activeExchanges"] == 0  # our ACK ended the exchange
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_slow_answer_to_non_is_non_without_ack(start_node):
    from twisted.internet import reactor

    slow = await start_node("--piggyback-timeout", "50")
    slow.plugins.register(SlowAuth(reactor, 0.2), name="slow-auth")
    await slow.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", slow.coap_address[1]))
    answer = await client.request(POST, TELEMETRY, b'{"a":1}', mtype=NON)
    assert answer.mtype == NON and code_text(answer.code) == "2.01"
    assert [m.mtype for m in client.received] == [NON]
    await client.port.stopListening()


async def big_shared_attributes(rest, device):
    values = {f"k{i}": "v" * 1000 for i in range(3)}
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE", values)
    assert status == 200
    return json.dumps({"shared": values}, separators=(",", ":")).encode()


@pytest_twisted.ensureDeferred
async def test_block2_in_1024_byte_blocks(coap, rest, device):
    whole = await big_shared_attributes(rest, device)
    first = await coap.request(GET, "/api/v1/TOKEN-1/attributes", query=["sharedKeys=k0,k1,k2"])
    assert code_text(first.code) == "2.05"
    assert tuple(first.opt.block2) == (0, True, 6) and len(first.payload) == 1024
    body, number = bytearray(first.payload), 1
    while True:
        part = await coap.request(GET, "/api/v1/TOKEN-1/attributes", query=["sharedKeys=k0,k1,k2"],
                                  block2=(number, False, 6))
        assert part.opt.block2.block_number == number
        body += part.payload
        if not part.opt.block2.more:
            break
        number += 1
    assert json.loads(bytes(body)) == json.loads(whole) and len(body) == len(whole) and number == 2
    # every block carries the same ETag (the whole answer's CRC-32): a client can tell blocks of
    # one answer from blocks of a recomputed, different one
    etag = first.opt.getOption(tx.ETAG)[0].value
    assert etag == zlib.crc32(bytes(body)).to_bytes(4, "big") and part.opt.getOption(tx.ETAG)[0].value == etag


@pytest_twisted.ensureDeferred
async def test_block2_honours_smaller_size_and_block_number(coap, rest, device):
    await big_shared_attributes(rest, device)
    blocks = []
    for number in (2,):
        answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes", block2=(number, False, 6))
        blocks.append(answer.payload)
    whole_tail = b"".join(blocks)  # bytes 2048.. of the whole answer
    answer = await coap.request(GET, "/api/v1/TOKEN-1/attributes", block2=(33, False, 2))
    assert tuple(answer.opt.block2) == (33, True, 2)
    assert answer.payload == whole_tail[33 * 64 - 2048:34 * 64 - 2048]
    beyond = await coap.request(GET, "/api/v1/TOKEN-1/attributes", block2=(500, False, 6))
    assert code_text(beyond.code) == "4.02"


@pytest_twisted.ensureDeferred
async def test_block1_upload_is_reassembled(coap, rest, device):
    payload = json.dumps({"long": "z" * 2500}).encode()
    blocks = [payload[i:i + 1024] for i in range(0, len(payload), 1024)]
    for number, block in enumerate(blocks):
        more = number < len(blocks) - 1
        answer = await coap.request(POST, TELEMETRY, block, block1=(number, more, 6))
        assert code_text(answer.code) == ("2.31" if more else "2.01")
        assert tuple(answer.opt.block1) == (number, more, 6)
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries")
    assert body["long"][0]["value"] == "z" * 2500


@pytest_twisted.ensureDeferred
async def test_block1_out_of_order_and_over_limit(start_node):
    small = await start_node("--max-body", "2000")
    await small.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", small.coap_address[1]))
    skipped = await client.request(POST, TELEMETRY, b"x" * 1024, block1=(1, True, 6))
    assert code_text(skipped.code) == "4.08"
    assert code_text((await client.request(POST, TELEMETRY, b"x" * 1024, block1=(0, True, 6))).code) == "2.31"
    assert code_text((await client.request(POST, TELEMETRY, b"x" * 1024, block1=(1, True, 6))).code) == "4.13"
    announced = await client.request(POST, TELEMETRY, b"x" * 1024, block1=(0, True, 6),
                                     extra_options=[(tx.SIZE1, (5000).to_bytes(2, "big"))])
    assert code_text(announced.code) == "4.13"
    assert announced.opt.getOption(tx.SIZE1)[0].value == 2000
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_failing_plugin_is_500_and_server_lives(node, coap, device):
    class Broken:
        @hookimpl(tryfirst=True)
        def tbcoap_authenticate(self, token):
            raise RuntimeError("plugin bug")

    node.plugins.register(Broken(), name="broken")
    answer = await coap.request(POST, "/api/v1/UNCACHED/telemetry", b'{"a":1}')
    assert code_text(answer.code) == "5.00"
    assert answer.payload == b"internal server error"
    node.plugins.unregister("broken")
    assert code_text((await coap.request(POST, TELEMETRY, b'{"a":1}')).code) == "2.01"


@pytest_twisted.ensureDeferred
async def test_block1_upload_is_checked_for_path_method_and_token_first(start_node):
    small = await start_node("--max-body", "200")
    await small.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", small.coap_address[1]))
    size1 = [(tx.SIZE1, (1000).to_bytes(2, "big"))]
    for path, method, code in (("/foo/bar", POST, "4.04"), ("/api/v1/NOPE/telemetry", POST, "4.01"),
                               ("/api/v1/TOKEN-1/nonsense", POST, "4.00"), (TELEMETRY, 3, "4.05"),
                               (TELEMETRY, POST, "4.13")):
        answer = await client.request(method, path, b"x" * 64, block1=(0, True, 2), extra_options=size1)
        assert code_text(answer.code) == code, path
    await client.port.stopListening()


class FakeClock(task.Clock):
    """A clock the test moves: ``now`` jumps without firing timers, ``advance`` fires them."""

    def __init__(self):
        super().__init__()
        self.rightNow = 1000.0

    @property
    def now(self):
        return self.rightNow

    @now.setter
    def now(self, value):
        self.rightNow = value


class Wire:
    """A transport that keeps what was written."""

    def __init__(self):
        self.sent = []

    def write(self, data, addr):
        self.sent.append(tx.Message.decode(data, addr))


def observing_layer(mtype):
    from tbcoap.coap.codec import response
    from tbcoap.coap.messagelayer import MessageLayer

    clock = FakeClock()
    layer = MessageLayer(lambda request: response(69, b"{}", 50), clock=clock)
    layer.transport = Wire()
    request = decode(build(GET, "/x", mtype=mtype, mid=1, token=b"t", observe=0), ("127.0.0.1", 9))
    observation = layer.observe(request)
    layer._answer(request, None, response(69, b"{}", 50))
    clock.advance(0)
    return layer, clock, observation


def test_non_relation_gets_a_con_once_a_day():
    from tbcoap.coap.codec import response

    layer, clock, observation = observing_layer(NON)
    observation.notify(response(69, b"1", 50))
    clock.advance(0)  # notifications leave on the next reactor turn
    clock.now += 24 * 3600 + 1
    observation.notify(response(69, b"2", 50))
    clock.advance(0)
    assert [m.mtype for m in layer.transport.sent] == [NON, NON, CON]


def test_a_relation_that_does_not_keep_up_is_ended():
    from tbcoap.coap.codec import response
    from tbcoap.coap.observe import MAX_QUEUED

    layer, clock, observation = observing_layer(NON)
    observation.in_flight = True  # as if a CON were waiting for its ACK: everything queues
    results = []
    for i in range(MAX_QUEUED + 1):
        observation.notify(response(69, b"%d" % i, 50), results.append)
    assert layer.stats()["observationsOverflowed"] == 1 and results.count("canceled") == MAX_QUEUED + 1
    observation.notify(response(69, b"late", 50), results.append)
    assert results[-1] == "canceled"
    observation.in_flight = False
    observation._pump()  # the final notification goes out and ends the relation
    clock.advance(0)
    final = layer.transport.sent[-1]
    assert code_text(final.code) == "5.03" and final.opt.observe is None
    assert not observation.active and layer.observations == {}
