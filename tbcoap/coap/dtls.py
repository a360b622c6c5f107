"""CoAP over DTLS 1.2 (CoAPS) on one UDP port: OpenSSL (pyOpenSSL on memory BIOs) runs the
handshakes, and each established session protects its records itself (``dtlscipher``).

A ClientHello from an address without a handshake gets the stateless cookie exchange first
(OpenSSL's ``DTLSv1_listen``; the cookie is an HMAC of the address under a key that changes
every few minutes), so a spoofed hello costs one small answer and no memory. A hello that
carries a valid cookie proves its sender reads at that address; it starts a handshake if the
handshake rate limits allow (per source address and in all; refused hellos are dropped and
counted). Handshakes in progress have a table of their own, capped below the session cap, whose
oldest entry goes first: a flood of unfinished handshakes never ends an established session.
A hello with a valid cookie from an address that has a session starts a new handshake beside it
(a device that restarted without close_notify, RFC 6347 §4.2.8); the old session keeps working
until the new one completes and replaces it.

Once a handshake completes, its OpenSSL connection is freed: the session keeps its keys,
sequence numbers and replay window (a few KB instead of over 70 KB), and sends its final flight
again if the peer shows it missed it. Decrypted datagrams go to the CoAPS message layer as if
they came straight from the peer's address, within a per-session allowance (a flood on one
session is dropped after decryption, cheaply); the layer's answers come back through ``write``.
Sessions are bounded in number (when full, the least recently active session of the source
address holding the most goes first), per source address and in idle time; ending one ends the observations made over it. Pre-shared keys
(``psk``) are described in ``dtlspsk``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import sys
from collections import Counter

from OpenSSL import SSL, crypto
from twisted.internet import protocol
from twisted.logger import Logger

from tbcoap.coap.dtlscipher import MAIN_CIPHERS, SUITES, RecordCipher
from tbcoap.coap.dtlspsk import ccm8_context, dtls_context, serve_psk, wants_ccm8
from tbcoap.coap.dtlsrecords import (ALERT, APPLICATION_DATA, HANDSHAKE, HEADER, datagrams, each_record,
                                     hello_fields, is_client_hello, psk_identity, records)
from tbcoap.coap.dtlssessions import READ_SIZE, FairTable, Handshake, Session, Table, drain
from tbcoap.ratelimit import RateLimiter

log = Logger()

MTU = 1232  # datagram payload that crosses any IPv6 path (1280 - 40 - 8)
COOKIE_PERIOD = 300.0  # seconds a cookie key is used; cookies of the previous one are still taken
MAX_SESSIONS = 10_000
MAX_HANDSHAKES = 1_000
MAX_PEER_SESSIONS = 1_000  # sessions and handshakes of one source address (a NAT holds many devices)
IDLE_TIMEOUT = 30 * 60.0
HANDSHAKE_TIMEOUT = 30.0
HANDSHAKE_RATE = (50, 100, 1_000)  # full handshakes: per second per source address, its burst, per second in all
SESSION_RATE = (100, 200)  # datagrams a session may send: per second, burst
RECEIVE_BUFFER = 4 << 20  # bytes of datagrams the kernel holds for the port while the reactor is busy
RATE_KEYS = 100_000  # source addresses the handshake rate limit remembers
SWEEP_INTERVAL = 1.0
EXPIRED = frozenset({9, 10})  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
CLOSE_NOTIFY, NO_RENEGOTIATION = b"\x01\x00", b"\x01\x64"
FINISHED = b"\x14"  # the handshake message type of Finished
DECRYPT_ERROR = 51  # the alert for a Finished that does not verify (here: made with another key)
HOLD_LIMIT = 2048  # bytes of a ClientKeyExchange datagram held while its PSK identity is looked up
COUNTERS = ("handshakes", "failedHandshakes", "helloVerifyRequests", "cookieRejections", "retransmissions",
            "evicted", "evictedHandshakes", "refusedPeerSessions", "refusedHandshakesAddress",
            "refusedHandshakesAll", "restarts", "pskFailures.unknownIdentity", "pskFailures.wrongKey", "dropped",
            "rejectedRecords", "rateLimited", "renegotiationsRefused", "unsentNoSession", "ended.closed",
            "ended.idle", "ended.evicted", "ended.stopping", "ended.failed", "ended.replaced")


def server_context(cert_file, key_file, ca_file=None) -> SSL.Context:
    """A DTLS 1.2 server context: the certificate chain and key given, client certificates asked
    for but not required; with ``ca_file`` they must chain to one of its CAs. An expired (or not
    yet valid) client certificate fails the handshake. ValueError naming the file that is wrong."""
    context = dtls_context(MAIN_CIPHERS)
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


def receive_buffer(sock, size) -> int:
    """Ask for a receive buffer of ``size`` bytes on ``sock`` (past the system's limit where the
    process may: SO_RCVBUFFORCE), and answer what the kernel gives (Linux reports twice what it
    counts for its own bookkeeping: the usable half is answered)."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return got // 2 if sys.platform.startswith("linux") else got


def _reason(exc) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not a usable PEM file" if not exc.args or not exc.args[0] else str(exc.args[0][-1][-1])


class DtlsEndpoint(protocol.DatagramProtocol):
    """The CoAPS port: sessions in front of a message layer (``layer``), which this endpoint
    serves as transport. ``identify(der)`` turns a client certificate (DER) into the identity
    ``identity(address)`` reports for the session's requests. ``psk``, if given, serves pre-shared
    keys: ``cached_key(identity)`` (bytes or None, from memory), ``key(identity)`` (a Deferred of
    the same, from the store) and ``identity(identity, key)`` (what a session with it reports)."""

    def __init__(self, context, layer, clock, identify=None, psk=None, max_sessions=MAX_SESSIONS,
                 max_handshakes=MAX_HANDSHAKES, max_peer_sessions=MAX_PEER_SESSIONS, idle_timeout=IDLE_TIMEOUT,
                 handshake_timeout=HANDSHAKE_TIMEOUT, handshake_rate=HANDSHAKE_RATE, session_rate=SESSION_RATE,
                 receive_buffer=RECEIVE_BUFFER):
        self.context, self.layer, self.clock, self.identify, self.psk = context, layer, clock, identify, psk
        self.max_peer_sessions, self.idle_timeout, self.handshake_timeout = max_peer_sessions, idle_timeout, \
            handshake_timeout
        self.sessions = FairTable(max_sessions)  # least recently active first
        self.handshakes = Table(min(max_handshakes, max_sessions))  # oldest first
        self.counters = Counter(dict.fromkeys(COUNTERS, 0))
        self.session_rate = session_rate
        self.receive_buffer = receive_buffer  # SO_RCVBUF asked for the port (0: the system's default)
        self.receive_buffer_size = None  # what the kernel gave
        self._address_rate = self._total_rate = None
        if handshake_rate:
            per_second, burst, in_all = handshake_rate
            self._address_rate = RateLimiter([(burst, burst / per_second)], max_keys=RATE_KEYS)
            self._total_rate = RateLimiter([(in_all, 1)], max_keys=1)
        self._master = os.urandom(32)
        self._keys = {}  # cookie period -> key
        self._current = None  # the handshake OpenSSL is working on (for the PSK callback)
        self._ccm8 = ccm8_context() if psk is not None else None
        self._callbacks = [serve_psk(c, self._psk_key) for c in (context, self._ccm8)] if psk is not None else []
        for each in (context, self._ccm8):
            if each is not None:
                each.set_cookie_generate_callback(self._cookie)
                each.set_cookie_verify_callback(self._cookie_ok)
        self._listener = self._new_listener(context)
        self._ccm8_listener = self._new_listener(self._ccm8) if self._ccm8 is not None else None
        self._sweeper = None

    # -- the UDP side ----------------------------------------------------------

    def startProtocol(self):
        sock = getattr(self.transport, "socket", None)
        if sock is not None and self.receive_buffer:
            self.receive_buffer_size = receive_buffer(sock, self.receive_buffer)
            if self.receive_buffer_size < self.receive_buffer:
                log.warn("the CoAPS port's receive buffer is {got} bytes, not the {asked} asked: raise the "
                         "system's limit (net.core.rmem_max on Linux) for a flooding session to cost others "
                         "nothing", got=self.receive_buffer_size, asked=self.receive_buffer)
        self.layer.makeConnection(self)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)

    def close_sessions(self):
        """Tell every peer its session ends (close_notify) and forget them: before the port stops."""
        while self.sessions:
            self._end(self.sessions.first(), "stopping", notify=True)

    def stopProtocol(self):
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        while self.handshakes:
            self._fail(self.handshakes.first(), counted=False)
        while self.sessions:  # the transport is gone: no alert can leave
            self._end(self.sessions.first(), "stopping")
        self.layer.doStop()

    def datagramReceived(self, data, address):
        if is_client_hello(data):
            self._hello(data, address)
            return
        session = self.sessions.get(address)
        if session is not None and self._receive(session, data):
            return
        handshake = self.handshakes.get(address)
        if handshake is not None:
            self._step(handshake, data)
        else:
            self.counters["dropped"] += 1

    def write(self, data, address):
        """The message layer's send: encrypted over the peer's session, or dropped without one."""
        session = self.sessions.get(address)
        if session is None:
            self.counters["unsentNoSession"] += 1
            return
        self._send(session, APPLICATION_DATA, data)

    def getHost(self):
        return self.transport.getHost()

    def identity(self, address):
        """The identity the peer at ``address`` authenticated with (certificate or PSK), or None."""
        session = self.sessions.get(address)
        return session.identity if session is not None else None

    def stats(self) -> dict:
        return {"sessions": len(self.sessions), "handshaking": len(self.handshakes), **self.counters}

    # -- established sessions ------------------------------------------------------

    def _receive(self, session, data) -> bool:
        """The records of ``data`` that authenticate under ``session`` (True if any did, or if the
        session's allowance is spent: then application data is dropped before it is decrypted)."""
        now = self.clock.seconds()
        if self.session_rate is not None and data[:1] == b"\x17" and self._allowance(session, now) < 1:
            self.counters["rateLimited"] += 1
            return True
        size = len(data)
        if size > HEADER and data[0] == APPLICATION_DATA and HEADER + (data[11] << 8 | data[12]) == size:
            found = ((APPLICATION_DATA, (data[3] << 8) | data[4], 0, data),)  # one record: the usual case
        elif records(data) is not None:
            found = each_record(data)
        else:
            return False
        cipher, address, opened = session.cipher, session.address, False
        for kind, epoch, _, record in found:
            if epoch != cipher.epoch:
                continue  # the peer's handshake messages again (its Finished, in this epoch, tells)
            got = cipher.open(record)
            if got is None:
                self.counters["rejectedRecords"] += 1
                continue
            if not opened:
                opened = True
                session.last_seen = now
                self.sessions.touch(session)
            kind, plain = got
            if kind == APPLICATION_DATA:
                session.final_flight = None  # the peer has our Finished
                if self.session_rate is None or self._allowance(session, now) >= 1:
                    session.allowance -= 1
                    self.layer.datagramReceived(plain, address)
                else:
                    self.counters["rateLimited"] += 1
            elif kind == ALERT:
                if plain[1:2] == b"\0":  # close_notify
                    self._end(session, "closed", notify=True)
                elif plain[:1] == b"\x02":  # fatal
                    self._end(session, "failed")
            elif kind == HANDSHAKE:
                if plain[:1] == FINISHED and session.final_flight:  # the peer's Finished again: it missed ours
                    self.counters["retransmissions"] += 1
                    self._send_raw(session.final_flight, address)
                elif plain[:1] != FINISHED:
                    self.counters["renegotiationsRefused"] += 1
                    self._send(session, ALERT, NO_RENEGOTIATION)
            if self.sessions.get(address) is not session:
                break
        return opened

    def _allowance(self, session, now) -> float:
        """The datagrams the session may still send now (a token bucket refilled at the session
        rate up to its burst); only authenticated datagrams are taken from it, so a forger cannot
        spend another peer's allowance."""
        rate, burst = self.session_rate
        session.allowance = allowance = min(burst, session.allowance + (now - session.stamp) * rate)
        session.stamp = now
        return allowance

    def _send(self, session, kind, data):
        try:
            record = session.cipher.seal(kind, data)
        except ValueError:  # sequence numbers exhausted: the peer must handshake again
            self._end(session, "failed")
            return
        self.transport.write(record, session.address)

    def _send_raw(self, data, address):
        for datagram in datagrams(data, MTU) if data else ():
            self.transport.write(datagram, address)

    def _end(self, session, reason, notify=False):
        """Forget a session (O(1)), ending the observations made over it; ``notify`` sends the
        peer a close_notify alert."""
        if not self.sessions.remove(session):
            return
        self.counters[f"ended.{reason}"] += 1
        if notify:
            try:
                self.transport.write(session.cipher.seal(ALERT, CLOSE_NOTIFY), session.address)
            except ValueError:
                pass
        self.layer.end_peer(session.address, f"dtls session {reason}")

    # -- the stateless cookie exchange, the rate limits -----------------------------

    def _new_listener(self, context):
        conn = SSL.Connection(context, None)
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

    def _cookie_for(self, peer: bytes, period) -> bytes:
        return hmac.new(self._cookie_key(period), peer, hashlib.sha256).digest()[:16]

    def _cookie(self, conn):
        return self._cookie_for(conn.get_app_data(), int(self.clock.seconds() // COOKIE_PERIOD))

    def _valid_cookie(self, peer: bytes, cookie: bytes) -> bool:
        period = int(self.clock.seconds() // COOKIE_PERIOD)
        return any(hmac.compare_digest(self._cookie_for(peer, p), cookie) for p in (period, period - 1))

    def _cookie_ok(self, conn, cookie):
        if self._valid_cookie(conn.get_app_data(), cookie):
            return True
        self.counters["cookieRejections"] += 1
        return False

    def _may_start(self, host) -> bool:
        """Count a full handshake of ``host`` against the rate limits; False (counted) past them."""
        if self._address_rate is None:
            return True
        now = self.clock.seconds()
        if self._address_rate.wait(host, now):
            self.counters["refusedHandshakesAddress"] += 1
            return False
        if self._total_rate.wait(None, now):
            self.counters["refusedHandshakesAll"] += 1
            return False
        self._address_rate.take(host, now)
        self._total_rate.take(None, now)
        return True

    def _hello(self, data, address):
        fields = hello_fields(data)
        if fields is None:
            self.counters["dropped"] += 1
            return
        random, cookie, suites = fields
        handshake = self.handshakes.get(address)
        if handshake is not None and handshake.random == random:
            self._step(handshake, data)  # the same hello again: OpenSSL answers with its flight again
            return
        peer = f"{address[0]}|{address[1]}".encode()
        if cookie and self._valid_cookie(peer, cookie) and not self._may_start(address[0]):
            return  # a handshake past the rate limits: dropped before OpenSSL sees it
        ccm8 = self._ccm8 is not None and wants_ccm8(suites)
        listener = self._ccm8_listener if ccm8 else self._listener
        listener.set_app_data(peer)
        try:
            listener.bio_write(data)
            listener.DTLSv1_listen()
        except SSL.WantReadError:  # no cookie, or a wrong one: a HelloVerifyRequest went out
            self.counters["helloVerifyRequests"] += 1
            self._send_raw(drain(listener), address)
            return
        except SSL.Error:
            self.counters["dropped"] += 1
            listener = None
        if ccm8:
            self._ccm8_listener = self._new_listener(self._ccm8)
        else:
            self._listener = self._new_listener(self.context)
        if listener is not None:
            self._start(listener, data, address, random)

    # -- handshakes --------------------------------------------------------------------

    def _start(self, conn, data, address, random):
        """A handshake after a valid cookie (beside the address's session if it has one)."""
        host = address[0]
        older = self.handshakes.get(address)
        if older is not None:
            self._fail(older)  # the peer started over
        if self.sessions.get(address) is None and \
                self.sessions.of_host(host) + self.handshakes.of_host(host) >= self.max_peer_sessions:
            self.counters["refusedPeerSessions"] += 1
            return
        while self.handshakes.full():
            self.counters["evictedHandshakes"] += 1
            self._fail(self.handshakes.first(), counted=False)
        handshake = Handshake(conn, address, self.clock.seconds(), random)
        self.handshakes.add(handshake)
        self._step(handshake, data)  # the hello again: older OpenSSL needs it, newer skips a duplicate

    def _step(self, handshake, data):
        """Give a datagram of the peer to its handshake; complete the session when it is done."""
        if records(data) is None or handshake.held is not None:
            self.counters["dropped"] += 1
            return
        if self.psk is not None and not handshake.psk_asked and self._hold_for_key(handshake, data):
            return
        finished, cipher_changed = handshake.note_received(data)
        conn = handshake.conn
        self._current = handshake
        try:
            conn.bio_write(data)
            conn.do_handshake()
        except SSL.WantReadError:
            self._send_raw(handshake.pending(), handshake.address)
            if finished and handshake.psk_key is not None:  # a PSK peer's Finished that did not decrypt
                handshake.strikes += 2 if cipher_changed else 1
                if handshake.strikes >= 2:
                    self.transport.write(handshake.alert(DECRYPT_ERROR), handshake.address)
                    self._fail(handshake, wrong_key=True)
                    return
            self._arm(handshake)
            return
        except SSL.Error:
            self._send_raw(handshake.pending(), handshake.address)  # OpenSSL's alert, if it wrote one
            self._fail(handshake)
            return
        finally:
            self._current = None
        self._complete(handshake)

    def _hold_for_key(self, handshake, data) -> bool:
        """Read the PSK identity of a ClientKeyExchange before OpenSSL does; unless its key is in
        memory, hold the datagram (True) until the store has answered."""
        identity = psk_identity(data)
        if identity is None:
            return False
        handshake.psk_asked, handshake.psk_identity = True, identity
        handshake.psk_key = self.psk.cached_key(identity)
        if handshake.psk_key is not None or len(data) > HOLD_LIMIT:
            return False
        handshake.held = data
        d = self.psk.key(identity)
        d.addErrback(lambda failure: log.failure("PSK lookup failed", failure))
        d.addCallback(self._key_found, handshake)
        return True

    def _key_found(self, key, handshake):
        data, handshake.held = handshake.held, None
        if self.handshakes.get(handshake.address) is handshake:
            handshake.psk_key = key
            self._step(handshake, data)

    def _psk_key(self, identity: bytes):
        """OpenSSL's question during a PSK handshake: the key of ``identity``, or None."""
        handshake = self._current
        if handshake is None:
            return None
        if identity != handshake.psk_identity:  # not what the ClientKeyExchange seemed to say
            handshake.psk_identity, handshake.psk_key = identity, self.psk.cached_key(identity)
        return handshake.psk_key

    def _complete(self, handshake):
        conn, address = handshake.conn, handshake.address
        self.handshakes.remove(handshake)
        self._disarm(handshake)
        final_flight = handshake.pending()
        self._send_raw(final_flight, address)
        suite = SUITES.get(conn.get_cipher_name())
        if suite is None:  # cannot happen with the cipher lists of dtlspsk and dtlscipher
            log.error("DTLS suite {name} has no record protection here", name=conn.get_cipher_name())
            self.counters["failedHandshakes"] += 1
            return
        cipher = RecordCipher(suite, conn.master_key(), conn.client_random(), conn.server_random(),
                              sent=handshake.sent, received=handshake.received)
        identity = None
        if suite.name.startswith("PSK-"):
            identity = self.psk.identity(handshake.psk_identity, handshake.psk_key)
        else:
            cert = conn.get_peer_certificate()
            if cert is not None and self.identify is not None:
                identity = self.identify(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))
        early = []  # application data OpenSSL read with the Finished (reordered), if any
        try:
            while True:
                early.append(conn.recv(READ_SIZE))
        except SSL.Error:
            pass
        old = self.sessions.get(address)
        if old is not None:  # the peer restarted: its new session replaces the old one
            self.counters["restarts"] += 1
            self._end(old, "replaced")
        while self.sessions.full():
            self.counters["evicted"] += 1
            self._end(self.sessions.victim(), "evicted", notify=True)
        burst = self.session_rate[1] if self.session_rate else 0
        session = Session(address, cipher, identity, self.clock.seconds(), final_flight, burst)
        self.sessions.add(session)
        self.counters["handshakes"] += 1
        for plain in early:
            if self.sessions.get(address) is session:
                self.layer.datagramReceived(plain, address)

    def _fail(self, handshake, counted=True, wrong_key=False):
        """Forget a handshake that will not complete; ``counted`` as a failed one (with its PSK
        reason: an identity nobody has, or a key that did not match)."""
        if not self.handshakes.remove(handshake):
            return
        self._disarm(handshake)
        handshake.held = None
        if not counted:
            return
        self.counters["failedHandshakes"] += 1
        if wrong_key:
            self.counters["pskFailures.wrongKey"] += 1
        elif handshake.psk_asked and handshake.psk_key is None:
            self.counters["pskFailures.unknownIdentity"] += 1

    def _arm(self, handshake):
        """Schedule OpenSSL's retransmission of the handshake flight, if it asks for one."""
        self._disarm(handshake)
        timeout = handshake.conn.DTLSv1_get_timeout()
        if timeout is not None:
            handshake.timer = self.clock.callLater(max(timeout, 0.0), self._retransmit, handshake)

    def _disarm(self, handshake):
        if handshake.timer is not None and handshake.timer.active():
            handshake.timer.cancel()
        handshake.timer = None

    def _retransmit(self, handshake):
        handshake.timer = None
        if self.handshakes.get(handshake.address) is not handshake:
            return
        try:
            handshake.conn.DTLSv1_handle_timeout()
        except SSL.Error:
            self._fail(handshake)
            return
        self.counters["retransmissions"] += 1
        self._send_raw(handshake.pending(), handshake.address)
        self._arm(handshake)

    def _sweep(self):
        """End handshakes past their time and sessions idle too long (oldest first: O(1) each)."""
        now = self.clock.seconds()
        while self.handshakes and now - self.handshakes.first().started >= self.handshake_timeout:
            self._fail(self.handshakes.first())
        while self.sessions and now - self.sessions.first().last_seen >= self.idle_timeout:
            self._end(self.sessions.first(), "idle", notify=True)
        self._sweeper = self.clock.callLater(SWEEP_INTERVAL, self._sweep)
