"""Malformed datagrams and safety by fuzzing: hypothesis properties of the
decoder and the message layer, and 100,000 garbage datagrams against a real in-process node.

The oracles are independent of tbcoap's decoder: datagrams are encoded with txThings'
message model, a small reference parser written from RFC 7252 section 3 says what is
well-formed, and what the layer writes back is decoded with txThings.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet import reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from txthings import coap as tx

from tbcoap.coap import codec
from tbcoap.coap.codec import KNOWN_OPTIONS, Malformed, decode
from tbcoap.coap.messagelayer import MessageLayer
from tests.coapclient import ACK, CON, GET, NON, POST, RST, build, code_text

REMOTE = ("192.0.2.7", 40000)


def fuzz(examples):
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- an independent reference parser (RFC 7252 section 3 and docs/device-api.md) ---------


class Ref:
    """What a datagram is: "drop" (not CoAP at all), "malformed" (header readable) or "ok"."""

    def __init__(self, kind, mtype=None, mid=None, code=None, token=None, options=None, payload=None):
        self.kind, self.mtype, self.mid, self.code = kind, mtype, mid, code
        self.token, self.options, self.payload = token, options, payload


def reference_parse(data: bytes) -> Ref:
    if len(data) < 4 or data[0] >> 6 != 1:
        return Ref("drop")
    mtype, tkl, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
    mid = struct.unpack("!H", data[2:4])[0]
    bad = Ref("malformed", mtype, mid)
    if tkl > 8 or 4 + tkl > len(data):
        return bad
    token, rest = data[4:4 + tkl], data[4 + tkl:]
    options, number, payload = [], 0, b""
    i = 0
    while i < len(rest):
        head = rest[i]
        i += 1
        if head == 0xFF:
            if i == len(rest):
                return bad
            payload = rest[i:]
            break
        fields = []
        for nibble in (head >> 4, head & 0x0F):
            if nibble == 15:
                return bad
            if nibble == 13:
                if i + 1 > len(rest):
                    return bad
                nibble, i = rest[i] + 13, i + 1
            elif nibble == 14:
                if i + 2 > len(rest):
                    return bad
                nibble, i = struct.unpack("!H", rest[i:i + 2])[0] + 269, i + 2
            fields.append(nibble)
        delta, length = fields
        if i + length > len(rest):
            return bad
        number += delta
        options.append((number, rest[i:i + length]))
        i += length
    if code == 0 and (token or options or payload):
        return bad
    return Ref("ok", mtype, mid, code, token, options, payload)


def option_value_matches(option, raw):
    """A decoded option (Opaque/String/Uint/Block) holds exactly what ``raw`` says."""
    value = option.value
    if isinstance(option, tx.UintOption):
        return value == int.from_bytes(raw, "big")
    if isinstance(option, tx.BlockOption):
        x = int.from_bytes(raw, "big")
        return tuple(value) == (x >> 4, bool(x & 0x08), x & 0x07)
    return value == raw


def assert_matches_reference(data, outcome, ref):
    """``outcome`` is decode()'s Message or the Malformed it raised."""
    if isinstance(outcome, Malformed):
        assert ref.kind != "ok", f"decode rejected a well-formed datagram {data!r}: {outcome}"
        if ref.kind == "drop":
            assert outcome.mtype is None and outcome.mid is None, data
        else:
            # a readable header: a CON must be RST-able, so type and MID are known and right
            assert (outcome.mtype, outcome.mid) == (ref.mtype, ref.mid), data
        return
    assert ref.kind == "ok", f"decode accepted {data!r}, reference says {ref.kind}"
    message = outcome
    assert (message.mtype, message.code, message.mid) == (ref.mtype, ref.code, ref.mid)
    assert message.token == ref.token and message.payload == ref.payload
    decoded = list(message.opt.optionList())
    assert [o.number for o in decoded] == [n for n, _ in ref.options]
    for option, (_, raw) in zip(decoded, ref.options):
        assert option_value_matches(option, raw), (option.number, option.value, raw)
    critical = [n for n, _ in ref.options if n & 1 and n not in KNOWN_OPTIONS]
    assert message.unknown_critical == (critical[0] if critical else None)


def run_decode(data):
    try:
        return decode(data, REMOTE)
    except Malformed as bad:
        return bad
    # any other exception propagates and fails the test


# -- strategies ---------------------------------------------------------------

def _uint(max_bytes):
    return st.integers(0, (1 << (8 * max_bytes)) - 1).map(lambda v: v.to_bytes((v.bit_length() + 7) // 8, "big"))


# option number -> strategy of a valid (canonical, for uint/block) value
OPTION_VALUES = {
    1: st.binary(max_size=8),             # If-Match (critical, not understood by tbcoap)
    3: st.binary(min_size=1, max_size=255),  # Uri-Host
    4: st.binary(min_size=1, max_size=8),    # ETag
    5: st.just(b""),                       # If-None-Match (critical, unknown)
    6: _uint(3),                           # Observe
    7: _uint(2),                           # Uri-Port
    8: st.binary(max_size=255),            # Location-Path
    11: st.binary(max_size=255),           # Uri-Path
    12: _uint(2),                          # Content-Format
    14: _uint(4),                          # Max-Age
    15: st.binary(max_size=255),           # Uri-Query
    17: _uint(2),                          # Accept
    20: st.binary(max_size=255),           # Location-Query
    23: _uint(3),                          # Block2
    27: _uint(3),                          # Block1
    28: _uint(4),                          # Size2
    35: st.binary(min_size=1, max_size=300),  # Proxy-Uri (length up to 1034; 300 exercises 14-extension)
    39: st.binary(min_size=1, max_size=255),  # Proxy-Scheme
    60: _uint(4),                          # Size1
    258: st.binary(max_size=1),            # No-Response (elective)
    2049: st.binary(max_size=20),          # unknown critical, needs a 14-extended delta
    65000: st.binary(max_size=20),         # large option number
}

options_strategy = st.lists(
    st.sampled_from(sorted(OPTION_VALUES)).flatmap(lambda n: OPTION_VALUES[n].map(lambda v: (n, v))),
    max_size=8,
)


@st.composite
def messages(draw):
    """A valid txThings Message and what it carries (options in wire order)."""
    kind = draw(st.sampled_from(["request", "response", "empty"]))
    mtype = draw(st.sampled_from([CON, NON, ACK, RST]))
    mid = draw(st.integers(0, 0xFFFF))
    if kind == "empty":
        message = tx.Message(mtype=mtype, mid=mid, code=tx.EMPTY)
        return message, []
    code = draw(st.integers(1, 31) if kind == "request" else st.integers(64, 191))
    token = draw(st.binary(max_size=8))
    payload = draw(st.binary(max_size=200))
    message = tx.Message(mtype=mtype, mid=mid, code=code, payload=payload, token=token)
    options = draw(options_strategy)
    for segment in draw(st.lists(st.binary(max_size=40), max_size=5)):
        options.append((tx.URI_PATH, segment))
    for number, value in options:
        message.opt.addOption(tx.OpaqueOption(number, value))
    wire = sorted(options, key=lambda o: o[0])  # stable: same-number options keep their order
    return message, wire


def _requests():
    """Valid requests to the device API, as a fuzzer would find them on the wire."""
    telemetry = "/api/v1/TOKEN-1/telemetry"
    return [
        build(POST, telemetry, b'{"temperature":21.5,"on":true}', mid=1, token=b"tk", content_format=50),
        build(POST, telemetry, b'[{"ts":1700000000000,"values":{"a":1}}]', mtype=NON, mid=2, token=b"\x01"),
        build(GET, "/.well-known/core", mid=3, token=b"wk"),
        build(GET, "/api/v1/TOKEN-1/attributes", mid=4, token=b"obs1", observe=0),
        build(GET, "/api/v1/TOKEN-1/attributes", mid=5, token=b"a", query=["clientKeys=a,b", "sharedKeys=c"]),
        build(POST, "/api/v1/TOKEN-1/attributes", b'{"fw":"1.0"}', mid=6, token=b"at"),
        build(GET, "/api/v1/TOKEN-1/rpc", mid=7, token=b"rpc1", observe=0),
        build(POST, "/api/v1/TOKEN-1/rpc", b'{"method":"echo","params":{}}', mid=8, token=b"r"),
        build(POST, "/api/v1/TOKEN-1/rpc/1", b'{"ok":1}', mid=9, token=b"rr"),
        build(POST, "/api/v1/TOKEN-1/claim", b'{"secretKey":"s","durationMs":1000}', mid=10, token=b"c"),
        build(POST, "/api/v1/provision", b'{"deviceName":"x","provisionDeviceKey":"k",'
                                         b'"provisionDeviceSecret":"s"}', mid=11, token=b"p"),
        build(POST, telemetry, b"x" * 64, mid=12, token=b"b1", block1=(0, True, 2)),
        build(POST, telemetry, b"{}", mid=13, token=b"b1", block1=(1, False, 2)),
        build(GET, "/.well-known/core", mid=14, token=b"b2", block2=(1, False, 0)),
        build(GET, "/api/v1/TOKEN-1/attributes", mid=15, token=b"x", extra_options=[(2049, b"?")]),
        tx.Message(mtype=CON, mid=16, code=tx.EMPTY).encode(),  # ping
        tx.Message(mtype=ACK, mid=17, code=tx.EMPTY).encode(),
        tx.Message(mtype=RST, mid=18, code=tx.EMPTY).encode(),
    ]


REQUESTS = _requests()

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 8)),
)


def mutate(data: bytes, ops) -> bytes:
    data = bytearray(data)
    for op in ops:
        kind = op[0]
        n = len(data)
        if kind == "flip" and n:
            data[op[1] % n] ^= op[2]
        elif kind == "set" and n:
            data[op[1] % n] = op[2]
        elif kind == "truncate":
            del data[op[1] % (n + 1):]
        elif kind == "extend":
            data += op[1]
        elif kind == "insert":
            pos = op[1] % (n + 1)
            data[pos:pos] = op[2]
        elif kind == "delete" and n:
            pos = op[1] % n
            del data[pos:pos + op[2]]
    return bytes(data)


valid_datagrams = st.one_of(messages().map(lambda m: m[0].encode()), st.sampled_from(REQUESTS))
mutated_datagrams = st.builds(mutate, valid_datagrams, st.lists(mutation, min_size=1, max_size=4))
any_datagrams = st.one_of(st.binary(max_size=300), valid_datagrams, mutated_datagrams)


# -- decode ---------------------------------------------------------------------

@fuzz(400)
@given(messages())
def test_round_trip_of_valid_messages(drawn):
    message, wire = drawn
    data = message.encode()
    decoded = decode(data, REMOTE)
    assert (decoded.mtype, decoded.code, decoded.mid) == (message.mtype, message.code, message.mid)
    assert decoded.token == message.token and decoded.payload == message.payload
    assert decoded.remote == REMOTE
    if message.code == tx.EMPTY:
        assert decoded.token == b"" and decoded.payload == b"" and not list(decoded.opt.optionList())
    got = list(decoded.opt.optionList())
    assert [o.number for o in got] == [n for n, _ in wire]
    for option, (number, raw) in zip(got, wire):
        assert option_value_matches(option, raw), (number, option.value, raw)
        assert option.encode() == raw  # canonical values re-encode to the same bytes
    assert decoded.opt.uri_path == [v for n, v in wire if n == tx.URI_PATH]
    # and the reference parser agrees, byte for byte
    assert_matches_reference(data, decoded, reference_parse(data))


@pytest.mark.parametrize("tkl", range(9))
def test_empty_message_with_anything_after_the_header_is_malformed(tkl):
    data = bytes([0x40 | tkl, 0, 0x12, 0x34]) + b"t" * tkl + (b"" if tkl else b"\xff!")
    with pytest.raises(Malformed) as raised:
        decode(data, REMOTE)
    assert (raised.value.mtype, raised.value.mid) == (CON, 0x1234)


@fuzz(1500)
@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_is_a_message_or_malformed(data):
    assert_matches_reference(data, run_decode(data), reference_parse(data))


@fuzz(1000)
@given(mutated_datagrams)
def test_decode_of_mutated_datagrams_is_a_message_or_malformed(data):
    assert_matches_reference(data, run_decode(data), reference_parse(data))


@fuzz(300)
@given(st.sampled_from(REQUESTS), st.integers(9, 15), st.sampled_from(["tkl", "delta-15", "length-15", "marker"]))
def test_decode_of_targeted_header_corruptions(base, tkl, how):
    """Token length over 8, option nibble 15, and a dangling payload marker: CON-RST-able."""
    head = base[:4 + (base[0] & 0x0F)]
    if how == "tkl":
        data = bytes([(base[0] & 0xF0) | tkl]) + base[1:]
    elif how == "delta-15":
        data = head + b"\xf0" + base[len(head):]
    elif how == "length-15":
        data = head + b"\x0f" + base[len(head):]
    else:
        message = tx.Message.decode(base)
        message.payload = b""
        data = message.encode() + b"\xff"
    ref = reference_parse(data)
    assert ref.kind == "malformed"
    assert_matches_reference(data, run_decode(data), ref)


# -- the message layer ----------------------------------------------------------

class FakeTransport:
    def __init__(self):
        self.written = []

    def write(self, data, addr=None):
        self.written.append((data, addr))


class FakeCall:
    def __init__(self):
        self._active = True

    def cancel(self):
        self._active = False

    def active(self):
        return self._active


class FakeClock:
    def __init__(self):
        self.calls = []

    def seconds(self):
        return 1000.0

    def callLater(self, delay, f, *args, **kw):
        call = FakeCall()
        self.calls.append((delay, f, args, kw, call))
        return call


class LogCapture:
    """Twisted log events at error/critical or with a failure, while active."""

    def __init__(self):
        self.bad = []

    def __call__(self, event):
        level = event.get("log_level")
        if "log_failure" in event or level in (LogLevel.error, LogLevel.critical):
            self.bad.append(event)

    def __enter__(self):
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self)

    def describe(self):
        out = []
        for event in self.bad[:5]:
            failure = event.get("log_failure")
            out.append(f"{event.get('log_format')!r} {failure.getTraceback() if failure else ''}")
        return "\n".join(out)


def make_layer():
    layer = MessageLayer(handler=lambda request: codec.response(69, b"ok"), clock=FakeClock())
    layer.transport = FakeTransport()
    return layer


def rst_bytes(mid):
    return bytes((0x70, 0, mid >> 8, mid & 0xFF))


@fuzz(1000)
@given(any_datagrams)
def test_datagram_received_never_raises_and_answers_as_spec(data):
    layer = make_layer()
    with LogCapture() as logged:
        layer.datagramReceived(data, REMOTE)  # must not raise
    written = layer.transport.written
    assert layer.counters["internalErrors"] == 0, logged.describe()
    assert not logged.bad, logged.describe()
    assert all(addr == REMOTE for _, addr in written)
    ref = reference_parse(data)
    if ref.kind == "drop":
        assert written == [] and layer.counters["malformed"] == 1
        return
    if ref.kind == "malformed":
        assert layer.counters["malformed"] == 1
        if ref.mtype == CON:
            assert [d for d, _ in written] == [rst_bytes(ref.mid)]
        else:
            assert written == []
        return
    # well-formed: what a server must do with it (docs/device-api.md, RFC 7252 sections 4.2-4.3, 5.2)
    code = ref.code
    answers = [tx.Message.decode(d, REMOTE) for d, _ in written]
    if code == tx.EMPTY:
        if ref.mtype == CON:  # ping
            assert [d for d, _ in written] == [rst_bytes(ref.mid)]
        else:
            assert written == []
    elif 1 <= code < 32:
        if ref.mtype == CON:
            assert len(answers) == 1
            answer = answers[0]
            assert (answer.mtype, answer.mid, answer.token) == (ACK, ref.mid, ref.token)
            assert tx.isResponse(answer.code)
        elif ref.mtype == NON:
            assert len(answers) <= 1
            for answer in answers:
                assert answer.mtype == NON and answer.token == ref.token and tx.isResponse(answer.code)
        else:  # a request in an ACK or RST is nonsense; never answered
            assert written == []
    else:  # responses (nothing is outstanding) and reserved classes
        if ref.mtype == CON:
            assert [d for d, _ in written] == [rst_bytes(ref.mid)]
        else:
            assert written == []


@fuzz(300)
@given(st.lists(st.tuples(any_datagrams, st.sampled_from([REMOTE, ("192.0.2.8", 5683)])), max_size=25))
def test_datagram_received_sequences_keep_the_layer_sound(sequence):
    """Many datagrams into one layer (duplicates, block-wise state, two peers): never raises,
    and each malformed one is answered as documented alone."""
    layer = make_layer()
    with LogCapture() as logged:
        for data, remote in sequence:
            written = layer.transport.written
            start = len(written)
            layer.datagramReceived(data, remote)
            ref = reference_parse(data)
            if ref.kind == "drop" or (ref.kind == "malformed" and ref.mtype != CON):
                assert written[start:] == []
            elif ref.kind == "malformed":
                assert written[start:] == [(rst_bytes(ref.mid), remote)]
    assert layer.counters["internalErrors"] == 0, logged.describe()
    assert not logged.bad, logged.describe()


def test_datagram_received_known_malformed_examples():
    """The documented list of malformed datagrams, one by one, through the layer."""
    cases = [
        (b"\x40\x01\x00", []),                           # short: dropped
        (b"\x80\x01\x00\x01", []),                       # version 2: dropped
        (b"\x49\x01\x12\x34" + b"t" * 9, [rst_bytes(0x1234)]),  # tkl 9, CON
        (b"\x59\x01\x12\x34" + b"t" * 9, []),           # tkl 9, NON
        (b"\x40\x02\x00\x07\xb5ab", [rst_bytes(7)]),     # truncated option
        (b"\x50\x02\x00\x07\xb5ab", []),
        (b"\x40\x02\x00\x08\xf0", [rst_bytes(8)]),       # delta 15
        (b"\x40\x02\x00\x09\x0f", [rst_bytes(9)]),       # length 15
        (b"\x50\x02\x00\x09\x0f", []),
        (b"\x40\x02\x00\x0a\xff", [rst_bytes(10)]),      # marker, no payload
        (b"\x50\x02\x00\x0a\xff", []),
        (b"\x60\x02\x00\x0a\xff", []),                   # ACK
        (b"\x70\x02\x00\x0a\xff", []),                   # RST
    ]
    for data, expected in cases:
        layer = make_layer()
        layer.datagramReceived(data, REMOTE)
        assert [d for d, _ in layer.transport.written] == expected, data
        assert layer.counters["malformed"] == 1, data


# -- 100,000 datagrams against a real node ------------------------------------------

FUZZ_COUNT = 100_000
BATCH = 128  # ~200 small datagrams fit the default 208 KiB socket buffer; 500 lost half of them


def network_corpus(rng: random.Random, count: int):
    """Random bytes, mutated valid requests and mutated headers, reproducibly."""
    templates = REQUESTS
    out = []
    for _ in range(count):
        r = rng.random()
        if r < 0.25:
            data = rng.randbytes(rng.randrange(0, 120))
        elif r < 0.35:  # random bytes behind a plausible CoAP header
            data = bytes([0x40 | rng.randrange(0, 64)]) + rng.randbytes(rng.randrange(3, 80))
        else:
            data = bytearray(rng.choice(templates))
            data[2:4] = rng.randbytes(2)  # a fresh MID, else most would be duplicates
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(6)
                n = len(data)
                if op == 0 and n:
                    data[rng.randrange(n)] ^= 1 << rng.randrange(8)
                elif op == 1 and n:
                    data[rng.randrange(n)] = rng.randrange(256)
                elif op == 2:
                    del data[rng.randrange(n + 1):]
                elif op == 3:
                    data += rng.randbytes(rng.randrange(1, 12))
                elif op == 4:
                    pos = rng.randrange(n + 1)
                    data[pos:pos] = rng.randbytes(rng.randrange(1, 6))
                elif op == 5 and n:
                    data[0] = (data[0] & 0xF0) | rng.randrange(16)  # token length
            data = bytes(data)
        out.append(data)
    return out


def _yield():
    return task.deferLater(reactor, 0, lambda: None)


@pytest_twisted.ensureDeferred
async def test_server_survives_100k_malformed_and_mutated_datagrams(node, coap, device):
    corpus = network_corpus(random.Random(7252), FUZZ_COUNT)
    target = ("127.0.0.1", node.coap_address[1])
    before = node.coap.stats()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    not_sent = 0
    started = time.monotonic()
    with LogCapture() as logged:
        try:
            for i, data in enumerate(corpus):
                try:
                    sock.sendto(data, target)
                except BlockingIOError:
                    not_sent += 1
                if i % BATCH == BATCH - 1:
                    await _yield()
            for _ in range(20):  # let the server drain its socket and finish what it started
                await _yield()
            await task.deferLater(reactor, 0.2, lambda: None)
        finally:
            sock.close()
        fuzz_seconds = time.monotonic() - started

        # still serving, correctly
        answer = await coap.request(POST, "/api/v1/TOKEN-1/telemetry", json.dumps({"fuzz": 1}), content_format=50)
        assert code_text(answer.code) == "2.01", answer.payload
        answer = await coap.request(GET, "/.well-known/core")
        assert code_text(answer.code) == "2.05", answer.payload

    after = node.coap.stats()
    print(f"\nfuzz: {FUZZ_COUNT} datagrams in {fuzz_seconds:.1f}s, {not_sent} not sent (EAGAIN); "
          f"malformed {before.get('malformed', 0)} -> {after.get('malformed', 0)}, "
          f"rstSent {after.get('rstSent', 0)}, duplicates {after.get('duplicates', 0)}, "
          f"answers { {k: v for k, v in after.items() if k[:1].isdigit()} }")
    assert after.get("internalErrors", 0) == 0, logged.describe()
    assert after.get("malformed", 0) > before.get("malformed", 0) + 1000
    assert not logged.bad, logged.describe()
