"""CoAP over DTLS 1.2 (CoAPS): pyOpenSSL connections on memory BIOs, driven by one UDP port.

A datagram from a peer with a session goes to that session. A ClientHello from any other
address gets the stateless cookie exchange first (OpenSSL's ``DTLSv1_listen`` on one listening
connection; the cookie is an HMAC of the address under a key that changes every few minutes),
so a spoofed hello costs one small answer and no memory: only a hello that carries a valid
cookie, proving its sender reads at that address, gets a session. Anything else is dropped and
counted, plaintext CoAP included.

Decrypted datagrams go to the CoAPS message layer as if they came straight from the peer's
address, and the layer's answers come back through ``write`` and leave encrypted. Sessions are
bounded in number (the least recently active goes first when full), per source address, in
handshake time and in idle time; ending one ends the observations made over it. Handshake
flights are retransmitted by OpenSSL's own DTLS timers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter, OrderedDict

from OpenSSL import SSL, crypto
from twisted.internet import protocol
from twisted.logger import Logger

from tbcoap.coap.dtlsrecords import datagrams, is_client_hello, records

log = Logger()

MTU = 1232  # datagram payload that crosses any IPv6 path (1280 - 40 - 8)
COOKIE_PERIOD = 300.0  # seconds a cookie key is used; cookies of the previous one are still taken
MAX_SESSIONS = 10_000
MAX_PEER_SESSIONS = 1_000  # sessions of one source address (a NAT holds many devices)
IDLE_TIMEOUT = 30 * 60.0
HANDSHAKE_TIMEOUT = 30.0
SWEEP_INTERVAL = 1.0
EXPIRED = frozenset({9, 10})  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
READ_SIZE = 65536
DTLS1_2_VERSION = 0xFEFD  # OpenSSL's number for DTLS 1.2 (pyOpenSSL names only the TLS versions)


def server_context(cert_file, key_file, ca_file=None) -> SSL.Context:
    """A DTLS 1.2 server context: the certificate chain and key given, client certificates asked
    for but not required; with ``ca_file`` they must chain to one of its CAs. An expired (or not
    yet valid) client certificate fails the handshake. ValueError naming the file that is wrong."""
    context = SSL.Context(SSL.DTLS_SERVER_METHOD)
    context.set_min_proto_version(DTLS1_2_VERSION)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)  # an idle session keeps no record buffers
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    for what, load, path in (("--dtls-cert", context.use_certificate_chain_file, cert_file),
                             ("--dtls-key", context.use_privatekey_file, key_file),
                             ("--dtls-ca", None, ca_file)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass  # a clear reason for a missing or unreadable file, before OpenSSL's own
            if load is not None:
                load(path)
        except (SSL.Error, OSError) as exc:
            raise ValueError(f"{what} {path}: {_reason(exc)}") from None
    try:
        context.check_privatekey()
    except SSL.Error:
        raise ValueError(f"--dtls-key {key_file} is not the key of --dtls-cert {cert_file}") from None
    if ca_file:
        try:
            context.load_verify_locations(ca_file)
        except (SSL.Error, OSError) as exc:
            raise ValueError(f"--dtls-ca {ca_file}: {_reason(exc)}") from None

    def verify(conn, cert, errnum, depth, ok):
        if errnum in EXPIRED:
            return False
        return bool(ok) if ca_file else True

    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, verify)
    return context


def _reason(exc) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not a usable PEM file" if not exc.args or not exc.args[0] else str(exc.args[0][-1][-1])


class Session:
    """One peer's DTLS connection."""

    __slots__ = ("conn", "address", "established", "last_seen", "started", "timer", "identity")

    def __init__(self, conn, address, now):
        self.conn, self.address = conn, address
        self.established, self.last_seen, self.started = False, now, now
        self.timer, self.identity = None, None


class DtlsEndpoint(protocol.DatagramProtocol):
    """The CoAPS port: sessions in front of a message layer (``layer``), which this endpoint
    serves as transport. ``identify(der)`` turns a client certificate (DER) into the identity
    ``identity(address)`` reports for the session's requests."""

    def __init__(self, context, layer, clock, identify=None, max_sessions=MAX_SESSIONS,
                 max_peer_sessions=MAX_PEER_SESSIONS, idle_timeout=IDLE_TIMEOUT,
                 handshake_timeout=HANDSHAKE_TIMEOUT):
        self.context, self.layer, self.clock, self.identify = context, layer, clock, identify
        self.max_sessions, self.max_peer_sessions = max_sessions, max_peer_sessions
        self.idle_timeout, self.handshake_timeout = idle_timeout, handshake_timeout
        self.counters = Counter()
        self.sessions = OrderedDict()  # address -> Session, least recently active first
        self._handshaking = OrderedDict()  # address -> Session, oldest handshake first
        self._per_host = {}  # host -> its sessions
        self._master = os.urandom(32)
        self._keys = {}  # cookie period -> key
        context.set_cookie_generate_callback(self._cookie)
        context.set_cookie_verify_callback(self._cookie_ok)
        self._listener = self._new_listener()
        self._sweeper = None

    # -- the UDP side ----------------------------------------------------------

    def startProtocol(self):
        self.layer.makeConnection(self)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    def close_sessions(self):
        """Tell every peer its session ends (close_notify) and forget them: before the port stops."""
        for session in list(self.sessions.values()):
            self._end(session, "stopping", notify=True)

    def stopProtocol(self):
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        for session in list(self.sessions.values()):  # the transport is gone: no alert can leave
            self._end(session, "stopping")
        self.layer.doStop()

    def datagramReceived(self, data, address):
        session = self.sessions.get(address)
        if session is not None:
            self._receive(session, data)
        elif is_client_hello(data):
            self._listen(data, address)
        else:
            self.counters["dropped"] += 1

    def write(self, data, address):
        """The message layer's send: encrypted over the peer's session, or dropped without one."""
        session = self.sessions.get(address)
        if session is None or not session.established:
            self.counters["unsentNoSession"] += 1
            return
        try:
            session.conn.send(data)
        except SSL.Error:
            self._end(session, "send failed")
            return
        self._flush(session)

    def getHost(self):
        return self.transport.getHost()

    def identity(self, address):
        """The identity of the certificate the peer at ``address`` presented, or None."""
        session = self.sessions.get(address)
        return session.identity if session is not None and session.established else None

    def stats(self) -> dict:
        return {"sessions": len(self.sessions), "handshaking": len(self._handshaking), **self.counters}

    # -- the stateless cookie exchange -------------------------------------------

    def _new_listener(self):
        conn = SSL.Connection(self.context, None)
        conn.set_accept_state()
        conn.set_ciphertext_mtu(MTU)
        return conn

    def _cookie_key(self, period):
        key = self._keys.get(period)
        if key is None:
            if len(self._keys) > 4:
                self._keys.clear()
            key = self._keys[period] = hmac.new(self._master, str(period).encode(), hashlib.sha256).digest()
        return key

    def _cookie(self, conn, period=None):
        if period is None:
            period = int(self.clock.seconds() // COOKIE_PERIOD)
        return hmac.new(self._cookie_key(period), conn.get_app_data(), hashlib.sha256).digest()[:16]

    def _cookie_ok(self, conn, cookie):
        period = int(self.clock.seconds() // COOKIE_PERIOD)
        if any(hmac.compare_digest(self._cookie(conn, p), cookie) for p in (period, period - 1)):
            return True
        self.counters["cookieRejections"] += 1
        return False

    def _listen(self, data, address):
        listener = self._listener
        listener.set_app_data(f"{address[0]}|{address[1]}".encode())
        try:
            listener.bio_write(data)
            listener.DTLSv1_listen()
        except SSL.WantReadError:  # no cookie, or a wrong one: a HelloVerifyRequest went out
            self.counters["helloVerifyRequests"] += 1
            self._send_pending(listener, address)
            return
        except SSL.Error:
            self.counters["dropped"] += 1
            self._listener = self._new_listener()
            return
        self._listener = self._new_listener()
        if self._per_host.get(address[0], 0) >= self.max_peer_sessions:
            self.counters["refusedPeerSessions"] += 1
            return
        while len(self.sessions) >= self.max_sessions:
            self.counters["evicted"] += 1
            self._end(next(iter(self.sessions.values())), "evicted", notify=True)
        session = Session(listener, address, self.clock.seconds())
        self.sessions[address] = session
        self._handshaking[address] = session
        self._per_host[address[0]] = self._per_host.get(address[0], 0) + 1
        self._receive(session, data)  # the hello again: older OpenSSL needs it, newer skips a duplicate

    # -- sessions ------------------------------------------------------------------

    def _receive(self, session, data):
        if records(data) is None:
            self.counters["dropped"] += 1
            return
        session.last_seen = self.clock.seconds()
        self.sessions.move_to_end(session.address)
        conn = session.conn
        try:
            conn.bio_write(data)
            if not session.established and not self._handshake(session):
                return
            while True:
                plain = conn.recv(READ_SIZE)
                self.layer.datagramReceived(plain, session.address)
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:  # the peer closed the session
            self._end(session, "closed", notify=True)
            return
        except SSL.Error:
            self._end(session, "failed" if session.established else "handshake failed")
            return
        self._flush(session)

    def _handshake(self, session):
        """One step of the handshake; True once it is complete."""
        try:
            session.conn.do_handshake()
        except SSL.WantReadError:
            self._flush(session)
            self._arm(session)
            return False
        session.established = True
        self._handshaking.pop(session.address, None)
        self._disarm(session)
        self.counters["handshakes"] += 1
        cert = session.conn.get_peer_certificate()
        if cert is not None and self.identify is not None:
            session.identity = self.identify(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))
        return True

    def _flush(self, session):
        pending = self._pending(session.conn)
        for datagram in datagrams(pending, MTU) if pending else ():
            self.transport.write(datagram, session.address)

    def _send_pending(self, conn, address):
        pending = self._pending(conn)
        for datagram in datagrams(pending, MTU) if pending else ():
            self.transport.write(datagram, address)

    @staticmethod
    def _pending(conn) -> bytes:
        chunks = []
        while True:
            try:
                chunks.append(conn.bio_read(READ_SIZE))
            except SSL.WantReadError:
                return b"".join(chunks)

    def _arm(self, session):
        """Schedule OpenSSL's retransmission of the handshake flight, if it asks for one."""
        self._disarm(session)
        timeout = session.conn.DTLSv1_get_timeout()
        if timeout is not None:
            session.timer = self.clock.callLater(max(timeout, 0.0), self._retransmit, session)

    def _disarm(self, session):
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None

    def _retransmit(self, session):
        session.timer = None
        if self.sessions.get(session.address) is not session or session.established:
            return
        try:
            session.conn.DTLSv1_handle_timeout()
        except SSL.Error:
            self._end(session, "handshake failed")
            return
        self.counters["retransmissions"] += 1
        self._flush(session)
        self._arm(session)

    def _end(self, session, reason, notify=False):
        """Forget a session (O(1)), ending the observations made over it; ``notify`` sends the
        peer a close_notify alert."""
        address = session.address
        if self.sessions.get(address) is not session:
            return
        del self.sessions[address]
        self._handshaking.pop(address, None)
        left = self._per_host[address[0]] - 1
        if left:
            self._per_host[address[0]] = left
        else:
            del self._per_host[address[0]]
        self._disarm(session)
        if reason == "handshake failed":
            self.counters["failedHandshakes"] += 1
        elif session.established:
            self.counters[f"ended.{reason.replace(' ', '')}"] += 1
        if notify and session.established:
            try:
                session.conn.shutdown()
            except SSL.Error:
                pass
            self._send_pending(session.conn, address)
        if session.established:
            self.layer.end_peer(address, f"dtls session {reason}")

    def _sweep(self):
        """End handshakes past their time and sessions idle too long (oldest first: O(1) each)."""
        now = self.clock.seconds()
        while self._handshaking:
            session = next(iter(self._handshaking.values()))
            if now - session.started < self.handshake_timeout:
                break
            self._end(session, "handshake failed")
        while self.sessions:
            session = next(iter(self.sessions.values()))
            if now - session.last_seen < self.idle_timeout:
                break
            self._end(session, "idle", notify=True)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)
