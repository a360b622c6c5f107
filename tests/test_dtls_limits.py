"""The CoAPS endpoint's limits and session lifecycle, in memory with a ``task.Clock``: handshakes
capped on their own and never at an established session's cost, handshake rate limits, a
restarted peer's new session replacing its old one, a session's datagram allowance, a lost final
flight, renegotiation, pre-shared keys (found at once or after a lookup, CCM_8, a wrong key, an
unknown identity), and counters that exist from the start."""

from __future__ import annotations

import time

import pytest
from OpenSSL import SSL
from twisted.internet import defer, task
from txthings import coap

from tbcoap.coap.dtls import COUNTERS, DtlsEndpoint, server_context
from tbcoap.coap.messagelayer import MessageLayer, response
from tests.certs import make_ca, make_cert
from tests.coapclient import build
from tests.dtlspeer import Peer, Wire

GET = 1
KEY = bytes(range(16))


@pytest.fixture(scope="module")
def server_files(tmp_path_factory):
    return make_cert(make_ca(), "localhost", dns=["localhost"]).write(tmp_path_factory.mktemp("pki"), "server")


class Keys:
    """The endpoint's ``psk``: keys by identity, in memory or (``later``) only after a lookup that
    the test finishes by hand."""

    def __init__(self, keys, later=False):
        self.keys, self.later, self.asked = keys, later, []

    def cached_key(self, identity):
        return None if self.later else self.keys.get(identity)

    def key(self, identity):
        if not self.later:
            return defer.succeed(self.keys.get(identity))
        self.asked.append(defer.Deferred())
        self.asked[-1].addCallback(lambda _: self.keys.get(identity))
        return self.asked[-1]

    def identity(self, identity, key):
        return ("PSK", identity)


def endpoint(server_files, **options):
    """``(endpoint, wire, clock)``: the endpoint answers every request with 2.05 "hello"."""
    clock = task.Clock()
    layer = MessageLayer(lambda request: response(coap.CONTENT, b"hello"), clock=clock)
    wire = Wire()
    point = DtlsEndpoint(server_context(*server_files), layer, clock, **options)
    point.makeConnection(wire)
    return point, wire, clock


def talks(peer, mid):
    peer.send(build(GET, "/x", mid=mid, token=b"t"))
    return peer.receive().endswith(b"hello")


def half_open(point, wire, address):
    """A peer that sends its hello, its hello with the cookie, and goes quiet."""
    peer = Peer(point, wire, address)
    peer.step()
    peer.step()
    return peer


def test_every_counter_is_there_from_the_start(server_files):
    point, _, _ = endpoint(server_files)
    stats = point.stats()
    assert set(COUNTERS) <= set(stats) and all(stats[name] == 0 for name in COUNTERS)
    assert stats["sessions"] == stats["handshaking"] == 0


def test_unfinished_handshakes_never_end_a_session(server_files):
    point, wire, clock = endpoint(server_files, max_sessions=10, max_handshakes=3, handshake_rate=None)
    devices = [Peer(point, wire, (f"10.1.0.{n}", 5683)).connect() for n in range(2)]
    for n in range(40):  # from many addresses, each stops after its hello with the cookie
        half_open(point, wire, (f"10.9.{n}.1", 4000 + n))
    stats = point.stats()
    assert stats["sessions"] == 2 and stats["handshaking"] == 3 and stats["evictedHandshakes"] == 37
    assert stats["evicted"] == 0 and stats["ended.evicted"] == 0
    assert all(talks(device, 10 + n) for n, device in enumerate(devices))
    late = Peer(point, wire, ("10.1.0.9", 5683)).connect()  # a real handshake still completes
    assert talks(late, 20) and point.stats()["sessions"] == 3


def test_the_oldest_handshake_goes_first(server_files):
    point, wire, clock = endpoint(server_files, max_handshakes=2, handshake_rate=None)
    first = half_open(point, wire, ("10.2.0.1", 1))
    second = half_open(point, wire, ("10.2.0.2", 1))
    half_open(point, wire, ("10.2.0.3", 1))
    assert point.handshakes.get(first.address) is None and point.handshakes.get(second.address) is not None


def test_completed_handshakes_from_one_address_push_out_their_own_sessions(server_files):
    """When full, the least recently active session of the address holding the most goes: devices
    on addresses of their own, idle longest, stay."""
    point, wire, clock = endpoint(server_files, max_sessions=6, handshake_rate=None)
    devices = [Peer(point, wire, (f"10.1.1.{n}", 5683)).connect() for n in range(3)]
    flood = [Peer(point, wire, ("10.66.0.1", 2000 + n)).connect() for n in range(20)]
    stats = point.stats()
    assert stats["sessions"] == 6 and stats["evicted"] == 17
    assert all(talks(device, 30 + n) for n, device in enumerate(devices))
    assert point.sessions.of_host("10.66.0.1") == 3
    for n in range(2):  # new devices push out the flood's sessions
        Peer(point, wire, (f"10.1.2.{n}", 5683)).connect()
    assert point.sessions.of_host("10.66.0.1") == 1 and all(point.sessions.get(d.address) for d in devices)
    assert talks(devices[0], 40) and talks(devices[2], 41)  # on equal terms the least recently active goes
    Peer(point, wire, ("10.1.3.1", 5683)).connect()
    assert point.sessions.get(devices[1].address) is None and point.sessions.get(devices[0].address) is not None


def test_full_handshakes_are_rate_limited_per_address_and_in_all(server_files):
    point, wire, clock = endpoint(server_files, handshake_rate=(1, 2, 3))
    clock.advance(10)
    for port in range(3):  # a burst of 2 from one address, then refused (dropped, counted)
        half_open(point, wire, ("10.3.0.1", port))
    stats = point.stats()
    assert stats["handshaking"] == 2 and stats["refusedHandshakesAddress"] == 1
    clock.advance(2.0)
    half_open(point, wire, ("10.3.0.1", 10))  # the burst spent, it takes 2 s (2 / 1 per second) to come back
    assert point.stats()["handshaking"] == 3
    for n in range(3):  # three per second in all
        half_open(point, wire, (f"10.3.1.{n}", 1))
    stats = point.stats()
    assert stats["handshaking"] == 5 and stats["refusedHandshakesAll"] == 1


def test_a_refused_hello_costs_no_openssl_connection(server_files):
    point, wire, clock = endpoint(server_files, handshake_rate=(1, 1, 1000))
    clock.advance(10)
    half_open(point, wire, ("10.4.0.1", 1))
    listener = point._listener
    half_open(point, wire, ("10.4.0.1", 2))
    assert point._listener is listener and point.stats()["refusedHandshakesAddress"] == 1


def test_a_restarted_peer_replaces_its_session(server_files):
    point, wire, clock = endpoint(server_files)
    address = ("10.5.0.1", 5683)
    old = Peer(point, wire, address).connect()
    assert talks(old, 1)
    new = Peer(point, wire, address)  # the same address, no close_notify: a restarted device
    new.step()
    new.step()  # its hello with the cookie: a handshake beside the session
    assert point.stats()["handshaking"] == 1 and point.stats()["sessions"] == 1
    assert talks(old, 2)  # until the new one completes, the old one works
    new.connect()
    assert talks(new, 3)
    stats = point.stats()
    assert stats["sessions"] == 1 and stats["restarts"] == 1 and stats["ended.replaced"] == 1


def test_a_flood_on_one_session_is_cut_to_its_allowance(server_files):
    point, wire, clock = endpoint(server_files, session_rate=(5, 10))
    flooder = Peer(point, wire, ("10.6.0.1", 1)).connect()
    other = Peer(point, wire, ("10.6.0.2", 1)).connect()
    for mid in range(30):
        flooder.send(build(GET, "/x", mid=mid, token=b"f"))
    answered = len(wire.take(flooder.address))
    assert answered == 10 and point.stats()["rateLimited"] == 20
    assert talks(other, 99)  # another session has its own allowance
    clock.advance(1.0)
    for mid in range(100, 110):
        flooder.send(build(GET, "/x", mid=mid, token=b"f"))
    assert len(wire.take(flooder.address)) == 5


def test_a_lost_final_flight_is_sent_again(server_files):
    point, wire, clock = endpoint(server_files)
    peer = Peer(point, wire, ("10.7.0.1", 1))
    peer.step()
    peer.step()
    with pytest.raises(SSL.WantReadError):
        peer.conn.do_handshake()
    point.datagramReceived(peer.out(), peer.address)  # the server completes here...
    assert point.stats()["sessions"] == 1
    wire.take(peer.address)  # ...but its final flight is lost
    with pytest.raises(SSL.WantReadError):
        peer.conn.do_handshake()
    again = b""
    while not again:  # the client's DTLS timer (about a second, OpenSSL's own clock): its final flight again
        time.sleep(max(peer.conn.DTLSv1_get_timeout() or 0.0, 0.01))
        peer.conn.DTLSv1_handle_timeout()
        again = peer.out()
    point.datagramReceived(again, peer.address)
    for answer in wire.take(peer.address):
        peer.conn.bio_write(answer)
    peer.conn.do_handshake()
    assert point.stats()["retransmissions"] >= 1 and talks(peer, 1)


def test_renegotiation_is_refused(server_files):
    point, wire, clock = endpoint(server_files)
    peer = Peer(point, wire, ("10.8.0.1", 1)).connect()
    peer.conn.renegotiate()
    try:
        peer.conn.do_handshake()
    except SSL.WantReadError:
        pass
    point.datagramReceived(peer.out(), peer.address)
    assert point.stats()["renegotiationsRefused"] >= 1 and point.stats()["sessions"] == 1
    answers = wire.take(peer.address)
    assert answers and all(answer[0] == 21 for answer in answers)  # a no_renegotiation alert, no handshake


def test_forged_and_replayed_records_are_dropped(server_files):
    point, wire, clock = endpoint(server_files)
    peer = Peer(point, wire, ("10.8.1.1", 1)).connect()
    peer.conn.send(build(GET, "/x", mid=5, token=b"r"))
    record = peer.out()
    point.datagramReceived(record, peer.address)
    point.datagramReceived(record, peer.address)  # the same record again
    assert len(wire.take(peer.address)) == 1
    forged = record[:-1] + bytes([record[-1] ^ 1])
    point.datagramReceived(forged, peer.address)
    for junk in (b"", b"\x17", b"\x17\xfe\xfd\x00\x01" + b"\x00" * 8):  # empty, cut short, an empty record
        point.datagramReceived(junk, peer.address)
    assert wire.take(peer.address) == [] and point.stats()["rejectedRecords"] == 3
    assert talks(peer, 6)


# -- pre-shared keys ---------------------------------------------------------------------------

@pytest.mark.parametrize("ciphers", ["PSK-AES128-GCM-SHA256", "PSK-AES128-CCM8:@SECLEVEL=0"])
def test_a_psk_peer_is_its_identity(server_files, ciphers):
    point, wire, clock = endpoint(server_files, psk=Keys({b"dev-1": KEY}))
    peer = Peer(point, wire, ("10.9.0.1", 1), psk=(b"dev-1", KEY), ciphers=ciphers).connect()
    assert peer.conn.get_cipher_name() == ciphers.split(":")[0]
    assert point.identity(peer.address) == ("PSK", b"dev-1")
    assert talks(peer, 1)


def test_a_psk_looked_up_in_the_store_first(server_files):
    keys = Keys({b"dev-2": KEY}, later=True)
    point, wire, clock = endpoint(server_files, psk=keys)
    peer = Peer(point, wire, ("10.9.0.2", 1), psk=(b"dev-2", KEY))
    for _ in range(4):
        peer.step()
    assert len(keys.asked) == 1 and point.stats()["sessions"] == 0  # its key exchange waits for the store
    keys.asked[0].callback(None)
    peer.step()
    peer.conn.do_handshake()
    assert point.identity(peer.address) == ("PSK", b"dev-2") and talks(peer, 1)


@pytest.mark.parametrize("identity, key, reason", [(b"dev-3", bytes(16), "wrongKey"),
                                                   (b"nobody", KEY, "unknownIdentity")])
def test_a_wrong_psk_fails_the_handshake_and_is_counted(server_files, identity, key, reason):
    point, wire, clock = endpoint(server_files, psk=Keys({b"dev-3": KEY}))
    peer = Peer(point, wire, ("10.9.0.3", 1), psk=(identity, key))
    with pytest.raises(SSL.Error):
        for _ in range(6):
            peer.step()
        peer.conn.do_handshake()
    stats = point.stats()
    assert stats[f"pskFailures.{reason}"] == 1 and stats["failedHandshakes"] == 1
    assert stats["sessions"] == stats["handshaking"] == 0


def test_certificate_peers_work_beside_psk(server_files):
    point, wire, clock = endpoint(server_files, psk=Keys({b"dev-4": KEY}), identify=lambda der: "a certificate")
    peer = Peer(point, wire, ("10.9.0.4", 1)).connect()
    assert peer.conn.get_cipher_name().startswith("ECDHE-ECDSA") and point.identity(peer.address) is None
    assert talks(peer, 1)


def test_a_spent_allowance_does_not_hold_back_a_restart(server_files):
    point, wire, clock = endpoint(server_files, session_rate=(1, 1))
    address = ("10.6.1.1", 1)
    old = Peer(point, wire, address).connect()
    for mid in range(5):
        old.send(build(GET, "/x", mid=mid, token=b"o"))
    assert point.stats()["rateLimited"] == 4
    new = Peer(point, wire, address).connect()  # its handshake records still get through
    assert point.stats()["restarts"] == 1
    clock.advance(1)
    assert talks(new, 9)
