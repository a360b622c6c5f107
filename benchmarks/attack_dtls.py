"""The CoAPS attacks of benchmarks/attack.py, against a node with a server certificate.

Each one runs while 50 well-behaved devices hold idle established sessions (each from an address
of its own, 127.0.3.1-50) and a CoAPS probe (127.0.4.1) posts telemetry every 50 ms; at the end
every device posts once more over its session. Printed besides attack.py's figures: how many of
the 50 sessions still answer (``fleetAlive``) and how many were told their session ended
(``fleetClosed``), the CoAPS probe's worst answer time and the node's DTLS counters.

The attacker sends from 11 loopback addresses (127.0.0.1-8 and 10-12; 127.0.0.9 is the probe's):

- **unfinished**: 11 addresses x 1,000 ports each send a ClientHello, then the hello with the
  cookie, then nothing (the handshakes are left open);
- **hellos**: the same, sustained for 30 s from fresh ports;
- **completed**: full handshakes as fast as one process can make them for 30 s, each session
  then left idle;
- **flood**: one established session posts telemetry (CON, its own token) as fast as it can for
  20 s.
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from OpenSSL import SSL  # noqa: E402

from tests.certs import make_ca, make_cert  # noqa: E402
from tests.dtlsclient import DtlsSocket  # noqa: E402

ATTACKERS = [f"127.0.0.{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12)]
FLEET = 50
PAYLOAD = b'{"alive":1}'


def server_args(workdir):
    """The options of a node serving CoAPS with a fresh certificate in ``workdir``."""
    cert, key = make_cert(make_ca(), "localhost", ips=["127.0.0.1"]).write(pathlib.Path(workdir), "server")
    return ["--dtls-cert", cert, "--dtls-key", key, "--coaps-port", "0", "--coaps-interface", "127.0.0.1"]


def coaps_address(workdir):
    with open(os.path.join(workdir, "tbcoap.log"), encoding="utf-8", errors="replace") as f:
        return "127.0.0.1", int(re.findall(r"CoAPS listening on udp \S+:(\d+)", f.read())[-1])


def post(token, mid):
    """A CON POST of telemetry; its token is the MID, so answers are matched by token."""
    out = bytearray([0x42, 2, mid >> 8, mid & 0xFF, mid >> 8, mid & 0xFF])
    last = 0
    for segment in ("api", "v1", token, "telemetry"):
        value = segment.encode()
        delta, last = 11 - last, 11
        out += bytes([delta << 4 | len(value)]) if len(value) < 13 else bytes([delta << 4 | 13, len(value) - 13])
        out += value
    return bytes(out + b"\xff" + PAYLOAD)


def secure_exchange(session, datagram, timeout=5.0, ack_timeout=None):
    """Send a CON request over a DTLS session and wait for the answer with its token (an empty ACK
    first is skipped, a separate CON answer acknowledged): (code, seconds), or (None, timeout).
    With ``ack_timeout`` the request is sent again as a CoAP client does (RFC 7252: after
    ``ack_timeout`` s, then twice as long each time) until an ACK or the answer comes."""
    token = datagram[4:6]
    started = time.monotonic()
    session.sendto(datagram, None)
    resend_at, wait, acked = (started + ack_timeout, ack_timeout, False) if ack_timeout else (None, None, True)
    while time.monotonic() - started < timeout:
        until = min(started + timeout, resend_at) if not acked else started + timeout
        session.settimeout(max(0.01, until - time.monotonic()))
        try:
            data, _ = session.recvfrom(65536)
        except socket.timeout:
            if not acked and time.monotonic() >= resend_at:
                wait *= 2
                resend_at = time.monotonic() + wait
                session.sendto(datagram, None)
            continue
        if len(data) >= 4 and data[2:4] == datagram[2:4] and data[0] >> 4 & 3 == 2:
            acked = True  # an ACK (empty, or the piggybacked answer): no more retransmissions
        if len(data) >= 6 and data[1] and data[4:4 + (data[0] & 0x0F)] == token:
            if data[0] >> 4 & 3 == 0:  # a separate CON answer: acknowledge it
                session.sendto(bytes([0x60, 0, data[2], data[3]]), None)
            return data[1], time.monotonic() - started
    return None, timeout


class Fleet:
    """Well-behaved devices, each with an idle established session from an address of its own."""

    def __init__(self, coaps, token):
        self.token, self.sessions = token, []
        for n in range(FLEET):
            session = DtlsSocket(coaps, source=f"127.0.3.{n + 1}").handshake()
            secure_exchange(session, post(token, n))
            self.sessions.append(session)

    def check(self):
        """``(alive, told closed)``: each device posts once more."""
        alive = closed = 0
        for n, session in enumerate(self.sessions):
            try:
                code, _ = secure_exchange(session, post(self.token, 1000 + n), timeout=3)
                alive += code == 65
            except (ConnectionResetError, SSL.Error):
                closed += 1
            session.drop()
        return alive, closed


class SecureProbe(threading.Thread):
    """A device posting telemetry over CoAPS every 50 ms, timing every answer (sending a lost request
    again after 2 s, then 4 s, as a CoAP client does; 15 s without an answer is a failure)."""

    def __init__(self, coaps, token):
        super().__init__(daemon=True)
        self.session = DtlsSocket(coaps, source="127.0.4.1").handshake()
        self.token, self.stop, self.worst, self.failures, self.answers, self.slow = token, False, 0.0, 0, 0, 0

    def run(self):
        mid = 0
        while not self.stop:
            mid = (mid + 1) & 0xFFFF
            try:
                code, took = secure_exchange(self.session, post(self.token, mid), timeout=15, ack_timeout=2)
            except (ConnectionResetError, SSL.Error):
                code, took = None, 15.0
                self.session = DtlsSocket(self.session.address, source="127.0.4.1").handshake()
            self.worst = max(self.worst, took)
            self.failures += code != 65
            self.answers += code == 65
            self.slow += took > 1.0
            time.sleep(0.05)


def hello_pair(address, source, port):
    """A ClientHello from (source, port), then the hello with the server's cookie, then silence:
    the handshake is left open on the server. True if the cookie came back."""
    conn = SSL.Connection(SSL.Context(SSL.DTLS_CLIENT_METHOD), None)
    conn.set_connect_state()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((source, port))
        sock.settimeout(1.0)
        for answer in (True, False):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
            sock.sendto(conn.bio_read(65536), address)
            if answer:
                conn.bio_write(sock.recvfrom(4096)[0])  # the HelloVerifyRequest
        return True
    except OSError:  # no answer in time (socket.timeout), or the port is taken
        return False
    finally:
        sock.close()


def run(ctx, scale, attack):
    """Fleet and probe up, ``attack(coaps)`` run, then the fleet checked: the figures."""
    coaps = coaps_address(ctx.workdir)
    fleet = Fleet(coaps, ctx.probe_token)
    probe = SecureProbe(coaps, ctx.probe_token)
    probe.start()
    result = attack(coaps, scale)
    time.sleep(0.5)
    probe.stop = True
    probe.join()
    alive, closed = fleet.check()
    from run import rest

    stats = rest(ctx.http, "GET", "/api/admin/stats")["dtls"]
    interesting = ("sessions", "handshaking", "handshakes", "failedHandshakes", "evicted", "evictedHandshakes",
                   "refusedHandshakesAddress", "refusedHandshakesAll", "refusedPeerSessions", "rateLimited")
    return {**result, "fleetAlive": alive, "fleetClosed": closed, "worstCoapsAnswer": round(probe.worst, 3),
            "coapsProbeFailures": probe.failures, "coapsProbeAnswers": probe.answers,
            "coapsProbeOverOneSecond": probe.slow, "dtls": {key: stats[key] for key in interesting}}


def unfinished(ctx, scale):
    def attack(coaps, scale):
        ports = int(1000 * scale)
        started, cookies = time.monotonic(), 0
        for port in range(ports):
            for source in ATTACKERS:
                cookies += hello_pair(coaps, source, 20000 + port)
        return {"hellosWithCookie": cookies, "attackSeconds": round(time.monotonic() - started, 1)}
    return run(ctx, scale, attack)


def hellos(ctx, scale):
    def attack(coaps, scale):
        seconds, sent, n = 30 * scale, 0, 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            sent += hello_pair(coaps, ATTACKERS[n % len(ATTACKERS)], 22000 + (n // len(ATTACKERS)) % 20000)
            n += 1
        return {"hellosWithCookie": sent, "perSecond": round(sent / seconds)}
    return run(ctx, scale, attack)


def completed(ctx, scale):
    def attack(coaps, scale):
        seconds, made, n = 30 * scale, 0, 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            session = DtlsSocket(coaps, source=ATTACKERS[n % len(ATTACKERS)], port=30000 + n // len(ATTACKERS) % 30000)
            try:
                session.handshake(timeout=1)
                made += 1
            except (TimeoutError, SSL.Error, OSError):
                pass
            session.drop()
            n += 1
        return {"handshakesCompleted": made, "perSecond": round(made / seconds)}
    return run(ctx, scale, attack)


def flood(ctx, scale):
    def attack(coaps, scale):
        session = DtlsSocket(coaps, source="127.0.0.1").handshake()
        seconds, sent, mid = 20 * scale, 0, 0
        started = time.monotonic()
        session.udp.setblocking(False)
        while time.monotonic() - started < seconds:
            mid = (mid + 1) & 0xFFFF
            session.conn.send(post("ATTACK_TOKEN", mid))
            data = session.conn.bio_read(65536)
            try:
                session.udp.sendto(data, coaps)
                sent += 1
            except BlockingIOError:
                pass
            if mid % 256 == 0:
                try:
                    while session.udp.recv(65536):
                        pass
                except (BlockingIOError, OSError):
                    pass
        session.drop()
        return {"datagramsSent": sent, "perSecond": round(sent / seconds)}
    return run(ctx, scale, attack)


ATTACKS = {"dtls-unfinished": unfinished, "dtls-hellos": hellos, "dtls-completed": completed, "dtls-flood": flood}
for _attack in ATTACKS.values():
    _attack.args = server_args
