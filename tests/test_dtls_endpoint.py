"""The DTLS endpoint on its own: a pyOpenSSL client wired to it in memory, time from a
``task.Clock``: handshake and idle time limits, sessions per address, forged datagrams inside a
session, a changed address, and the memory a flood of spoofed hellos costs."""

from __future__ import annotations

import tracemalloc

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet import task
from txthings import coap

from tbcoap.coap.codec import response
from tbcoap.coap.dtls import DtlsEndpoint, server_context
from tbcoap.coap.messagelayer import MessageLayer
from tbcoap.services.certificates import digest
from tests.certs import make_ca, make_cert
from tests.coapclient import build
from tests.dtlspeer import Peer, Wire

GET = 1


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    server = make_cert(ca, "localhost", dns=["localhost"]).write(folder, "server")
    device = make_cert(None, "device", client=True)
    return server, device.write(folder, "device"), device


@pytest.fixture
def rig(credentials):
    """``(endpoint, wire, clock, layer)`` with small limits."""
    (cert, key), _, _ = credentials
    clock = task.Clock()
    ended = []

    def handler(request):
        if request.opt.observe == 0:
            layer.observe(request, on_cancel=lambda observation, reason: ended.append(reason))
        return response(coap.CONTENT, b"hello")

    layer = MessageLayer(handler, clock=clock)
    wire = Wire()
    endpoint = DtlsEndpoint(server_context(cert, key), layer, clock, identify=digest, max_sessions=10,
                            max_peer_sessions=2, idle_timeout=60.0, handshake_timeout=5.0)
    endpoint.makeConnection(wire)
    yield endpoint, wire, clock, ended
    endpoint.doStop()


def test_a_request_over_the_session(rig, credentials):
    endpoint, wire, clock, _ = rig
    _, (cert, key), device = credentials
    peer = Peer(endpoint, wire, ("10.0.0.1", 5000), cert, key).connect()
    assert endpoint.identity(peer.address) == digest(device.certificate.public_bytes(Encoding.DER))
    assert endpoint.identity(("10.0.0.1", 5001)) is None
    peer.send(build(GET, "/hello", mid=1, token=b"t"))
    answer = peer.receive()
    assert answer[1] == coap.CONTENT and answer.endswith(b"hello")


def test_an_unfinished_handshake_is_ended(rig):
    endpoint, wire, clock, _ = rig
    peer = Peer(endpoint, wire, ("10.0.0.2", 5000))
    peer.step()  # hello -> HelloVerifyRequest
    peer.step()  # hello with cookie -> the server's flight; then the client goes quiet
    assert endpoint.stats()["handshaking"] == 1
    clock.advance(6)
    stats = endpoint.stats()
    assert stats["sessions"] == 0 and stats["handshaking"] == 0 and stats["failedHandshakes"] == 1


def test_an_idle_session_is_ended_with_its_observations(rig):
    endpoint, wire, clock, ended = rig
    peer = Peer(endpoint, wire, ("10.0.0.3", 5000)).connect()
    peer.send(build(GET, "/obs", mid=2, token=b"o", observe=0))
    assert peer.receive().endswith(b"hello")
    clock.advance(30)
    assert endpoint.stats()["sessions"] == 1
    clock.advance(31)
    assert endpoint.stats()["sessions"] == 0 and endpoint.stats()["ended.idle"] == 1
    assert ended == ["dtls session idle"]
    with pytest.raises(SSL.ZeroReturnError):  # the peer was told
        peer.receive()


def test_sessions_per_address_are_capped(rig):
    endpoint, wire, clock, _ = rig
    peers = [Peer(endpoint, wire, ("10.0.0.4", 5000 + n)) for n in range(3)]
    for peer in peers[:2]:
        peer.connect()
    peers[2].step()
    peers[2].step()
    stats = endpoint.stats()
    assert stats["sessions"] == 2 and stats["refusedPeerSessions"] == 1
    Peer(endpoint, wire, ("10.0.0.5", 5000)).connect()  # another address is not held back
    assert endpoint.stats()["sessions"] == 3


def test_a_forged_datagram_does_not_break_a_session(rig):
    endpoint, wire, clock, _ = rig
    peer = Peer(endpoint, wire, ("10.0.0.6", 5000)).connect()
    for junk in (b"\x17\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x40" + b"x" * 10,  # cut short
                 b"\x17\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x05" + b"forge",  # whole, but not authentic
                 b"\x40\x01\x00\x01"):  # plaintext CoAP
        endpoint.datagramReceived(junk, peer.address)
    peer.send(build(GET, "/x", mid=3, token=b"a"))
    assert peer.receive().endswith(b"hello")
    assert endpoint.stats()["dropped"] >= 2


def test_a_new_address_needs_a_new_handshake(rig):
    endpoint, wire, clock, _ = rig
    peer = Peer(endpoint, wire, ("10.0.0.7", 5000)).connect()
    peer.send(build(GET, "/x", mid=4, token=b"b"), address=("10.0.0.7", 5001))
    assert wire.take(("10.0.0.7", 5001)) == [] and endpoint.stats()["dropped"] == 1
    moved = Peer(endpoint, wire, ("10.0.0.7", 5001)).connect()
    moved.send(build(GET, "/x", mid=5, token=b"c"))
    assert moved.receive().endswith(b"hello")


def test_a_flood_of_spoofed_hellos_keeps_no_memory(rig):
    endpoint, wire, clock, _ = rig
    hello = _first_flight()
    for n in range(200):  # warm up allocator caches
        endpoint.datagramReceived(hello, (f"198.51.{n % 250}.{n % 200}", 1000 + n))
    wire.sent.clear()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(20_000):
        endpoint.datagramReceived(hello, (f"203.0.{n // 250 % 250}.{n % 250}", 1024 + n % 60000))
        wire.sent.clear()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = endpoint.stats()
    assert stats["sessions"] == 0 and stats["helloVerifyRequests"] >= 20_000
    assert grown < 64 * 1024, f"{grown} bytes kept after 20,000 spoofed hellos"


def _first_flight():
    conn = SSL.Connection(SSL.Context(SSL.DTLS_CLIENT_METHOD), None)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(65536)
