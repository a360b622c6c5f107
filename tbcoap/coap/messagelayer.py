"""The message layer: txThings' ``Coap`` protocol, made RFC 7252/7959-correct for a server.

txThings 0.3.0 stays the protocol class and the message/option model; this
module overrides (never patches) what it gets wrong:

- ``datagramReceived`` validates before decoding: malformed datagrams never
  raise, a malformed CON gets RST, a malformed NON or a bad version is dropped;
  all are counted.
- duplicate detection in a bounded ``RecentMap`` keyed by (host, port, MID),
  no timer per message; a duplicate CON gets the same answer again.
- outgoing CON exchanges keyed by (host, port, MID); a retransmission that
  gives up, an ACK and an RST are reported to the sender's callback.
- answers are piggybacked when ready within the piggyback window, else an
  empty ACK (no token) and a separate CON; NON requests get NON answers only.
- Block2 in 1024-byte blocks (or the client's smaller size), block N on
  request; Block1 uploads reassembled up to the body limit, 2.31 Continue.
- ``BlockOption`` encodes 0 as an empty value; no per-message logging.

The request handler is a callable ``handler(request) -> Message | Deferred``
that knows nothing of this layer; the answer's code, payload and options are
its business, type, MID, token and blocks are this layer's.
"""

from __future__ import annotations

import weakref
import zlib
from collections import Counter, OrderedDict, deque
from time import perf_counter

from twisted.internet import defer
from twisted.logger import Logger
from txthings import coap

from tbcoap.coap.budget import ByteBudget
from tbcoap.coap.exchanges import Exchanges
from tbcoap.coap.observe import Observation, call_safely
from tbcoap.coap.recent import RecentMap

log = Logger()

CON, NON, ACK, RST = coap.CON, coap.NON, coap.ACK, coap.RST
BLOCK_SZX = 6  # 1024 bytes
NON_LIFETIME = 145.0  # RFC 7252 §4.8.2
MAX_HOSTS = 200_000  # distinct peer addresses remembered for exchange keys (then forgotten at once)
MAX_UPLOADS = 1024  # Block1 uploads being reassembled (each up to --max-body)
MAX_PEER_UPLOADS = 16  # of them from one source address
OUTBOX_BATCH = 1000  # notifications sent per reactor turn
PEER_SHARE = 16  # one source address may hold at most this fraction of the notification budget
SNAPSHOT_OVERHEAD = 512  # a kept large answer's options and objects
MAX_LARGE_ANSWERS = 4096  # answers over one block kept for their later blocks (bytes: the answer cache)
CON_REFRESH = 24 * 3600.0  # a NON relation gets a CON notification at least this often
KNOWN_OPTIONS = frozenset({3, 4, 6, 7, 8, 11, 12, 14, 15, 17, 20, 23, 27, 28, 60})
"""Options this server understands; any other critical (odd) one is 4.02."""


def code_text(code: int) -> str:
    """``69`` -> ``"2.05"``."""
    return f"{code >> 5}.{code & 31:02d}"


class Malformed(Exception):
    """A datagram that is not a CoAP message; ``mtype``/``mid`` when readable."""

    def __init__(self, reason, mtype=None, mid=None):
        super().__init__(reason)
        self.mtype = mtype
        self.mid = mid


class BlockOption(coap.BlockOption):
    """Block1/Block2 option whose value 0 encodes as zero bytes (RFC 7959 §2.2)."""

    def encode(self):
        num, more, szx = self.value
        value = (num << 4) | (0x08 if more else 0) | szx
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    @property
    def length(self):
        return len(self.encode())


# txThings lists Accept (17) as 16, so it would decode as opaque bytes
OPTION_FORMATS = {**coap.option_formats, coap.ACCEPT: coap.UintOption, coap.BLOCK1: BlockOption,
                  coap.BLOCK2: BlockOption}


def decode(data: bytes, remote) -> coap.Message:
    """Validate a datagram and decode it into a txThings Message, or raise Malformed.

    The message's ``unknown_critical`` is the first critical option number
    this server does not understand, or None.
    """
    end = len(data)
    if end < 4:
        raise Malformed("shorter than a header")
    first = data[0]
    if first >> 6 != 1:
        raise Malformed("version is not 1")
    mtype, tkl, code, mid = (first >> 4) & 3, first & 15, data[1], (data[2] << 8) | data[3]
    if tkl > 8:
        raise Malformed("token length over 8", mtype, mid)
    pos = 4 + tkl
    if pos > end:
        raise Malformed("truncated token", mtype, mid)
    options, number, payload, unknown = [], 0, b"", None
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte == 0xFF:
            if pos == end:
                raise Malformed("payload marker without payload", mtype, mid)
            payload = data[pos:]
            break
        delta, length = byte >> 4, byte & 15
        if delta > 12:
            delta, pos = _extended(delta, data, pos, mtype, mid)
        if length > 12:
            length, pos = _extended(length, data, pos, mtype, mid)
        if pos + length > end:
            raise Malformed("truncated option", mtype, mid)
        number += delta
        if number & 1 and unknown is None and number not in KNOWN_OPTIONS:
            unknown = number
        options.append((number, data[pos:pos + length]))
        pos += length
    if code == coap.EMPTY and (tkl or options or payload):
        raise Malformed("empty message with content", mtype, mid)
    message = coap.Message(mtype=mtype, mid=mid, code=code, payload=payload, token=data[4:4 + tkl])
    message.remote = remote
    message.unknown_critical = unknown
    add = message.opt.addOption
    for number, raw in options:
        option = OPTION_FORMATS.get(number, coap.OpaqueOption)(number)
        option.decode(raw)
        add(option)
    return message


def _extended(nibble, data, pos, mtype, mid):
    if nibble < 13:
        return nibble, pos
    if nibble == 13 and pos < len(data):
        return data[pos] + 13, pos + 1
    if nibble == 14 and pos + 1 < len(data):
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise Malformed("bad option delta or length", mtype, mid)


def response(code: int, payload: bytes = b"", content_format: int | None = None) -> coap.Message:
    """A response Message for a handler to return."""
    message = coap.Message(code=code, payload=payload)
    if content_format is not None:
        message.opt.content_format = content_format
    return message


class _Pending:
    """A request whose answer is a Deferred that has not fired yet."""

    __slots__ = ("request", "key", "deadline", "acked")

    def __init__(self, request, key):
        self.request, self.key, self.deadline, self.acked = request, key, 0.0, False


class _Upload:
    """A Block1 upload being reassembled."""

    __slots__ = ("data", "expires")

    def __init__(self, expires):
        self.data, self.expires = bytearray(), expires


class MessageLayer(coap.Coap):
    """A txThings ``Coap`` protocol for servers: correct, bounded and quiet."""

    def __init__(self, handler, *, max_body=65536, piggyback_window=0.5, block_szx=BLOCK_SZX,
                 dedup_cap=1_000_000, ack_timeout=coap.ACK_TIMEOUT, max_retransmit=coap.MAX_RETRANSMIT,
                 max_observations=100_000, max_peer_observations=1000, notification_bytes=64 << 20,
                 answer_cache=64 << 20, clock=None):
        super().__init__(endpoint=None)
        self.handler = handler
        self.max_body = max_body
        self.piggyback_window = piggyback_window
        self.block_szx = block_szx
        self.ack_timeout = ack_timeout
        self.max_retransmit = max_retransmit
        if clock is None:
            from twisted.internet import reactor as clock  # late: the application chooses the reactor
        self.clock = clock
        self.counters = Counter()
        self.refusing = False  # set while shutting down: new requests get 5.03
        self.answer_budget = ByteBudget(answer_cache)  # answers kept for duplicates and for Block2
        self.recent = RecentMap(coap.EXCHANGE_LIFETIME, dedup_cap, self.answer_budget, _answer_cost, _answer_code)
        self.exchanges = Exchanges(self.clock, self._write, ack_timeout, max_retransmit, self.counters)
        self._outbox = deque()  # notifications to send, in order; at most OUTBOX_BATCH per reactor turn
        self._draining = None
        self._paths = {}  # interned (path, query) of observations: relations of one resource share one
        self._hosts = {}  # interned host names of observations
        self._uploads = OrderedDict()  # Block1 uploads being reassembled, least recently continued first
        self._peer_uploads = {}  # host -> how many of them it has
        self._large = RecentMap(coap.MAX_TRANSMIT_WAIT, MAX_LARGE_ANSWERS, self.answer_budget, _snapshot_cost)
        self.observations = {}  # (host, port, token) -> Observation
        self.max_observations = max_observations
        self.max_peer_observations = max_peer_observations
        self._peer_observations = {}  # host -> how many relations it has
        self._peer_relations = {}  # (host, port) -> {key: None} of its relations (ended with a DTLS session)
        self.identify = None  # over DTLS: address -> identity of the peer's certificate, or None
        self.latency = None  # a LatencyHistogram of receipt-to-answer times, when metrics want them
        self.notification_budget = ByteBudget(notification_bytes)
        self._peer_queued = {}  # host -> bytes of notifications waiting for it
        self.max_peer_queued = max(notification_bytes // PEER_SHARE, 1)
        self._host_ids = {}
        self._next_host_id = 1
        self._waiting = deque()  # CON requests answered later, oldest first: one timer for all
        self._sweep = None
        self._socket = None
        self._sent_non = RecentMap(NON_LIFETIME, 100_000)  # (host, port, MID) of NON notifications

    # -- receiving ---------------------------------------------------------

    def datagramReceived(self, data, remote):
        try:
            message = decode(data, remote)
        except Malformed as bad:
            self.counters["malformed"] += 1
            if bad.mtype == CON and bad.mid is not None:
                self._send_empty(RST, bad.mid, remote)
            return
        try:
            code = message.code
            if code == coap.EMPTY:
                self._received_empty(message)
            elif code < 32:
                self._received_request(message)
            elif 64 <= code < 192:
                self._received_response(message)
            else:
                self.counters["malformed"] += 1
                if message.mtype == CON:
                    self._send_empty(RST, message.mid, remote)
        except Exception:
            self.counters["internalErrors"] += 1
            log.failure("message layer error (datagram dropped)")

    def _received_empty(self, message):
        if message.mtype == CON:
            self._send_empty(RST, message.mid, message.remote)  # CoAP ping
        elif message.mtype in (ACK, RST):
            remote = message.remote
            self.exchanges.done((remote[0], remote[1], message.mid), "ack" if message.mtype == ACK else "rst")
            if message.mtype == RST:
                remote = message.remote
                observation = self._sent_non.get((remote[0], remote[1], message.mid))
                observation = observation() if observation is not None else None
                if observation is not None:
                    observation.cancel("rst")

    def _received_response(self, message):
        if message.mtype == ACK:
            remote = message.remote
            self.exchanges.done((remote[0], remote[1], message.mid), "ack")
        elif message.mtype == CON:
            self._send_empty(RST, message.mid, message.remote)

    def _received_request(self, request):
        if request.mtype not in (CON, NON):
            self.counters["malformed"] += 1
            return
        remote = request.remote
        key = self._exchange_key(remote, request.mid)
        recent = self.recent
        if key in recent:
            self.counters["duplicates"] += 1
            if request.mtype == CON:
                answer = recent.get(key)
                if isinstance(answer, int):
                    if answer < 0 and request.code == coap.GET:  # its kept answer went for the byte
                        recent.replace(key, None)                  # budget: a GET is answered again
                        self._received_whole(request, key)
                        return
                    # an empty answer kept as its code (or one that lost its payload to the budget)
                    answer = bytes((0x60 | len(request.token), abs(answer), request.mid >> 8, request.mid & 0xFF))
                    answer += request.token
                if answer is not None:
                    self._write(answer, remote)
            return
        if self.refusing:
            if request.mtype == CON:
                self._answer(request, None, response(coap.SERVICE_UNAVAILABLE, b"shutting down", 0))
            return
        recent.put(key, None, self.clock.seconds())
        request.received = perf_counter()
        if request.unknown_critical is not None:
            if request.mtype == CON:
                self._answer(request, key, response(
                    coap.BAD_OPTION, b"unsupported critical option %d" % request.unknown_critical, 0))
            return
        request.protocol = self
        block1 = request.opt.block1
        if block1 is not None and block1.block_number == 0 and self._precheck(request, key):
            return
        self._received_whole(request, key)

    def _precheck(self, request, key):
        """Before the first block of an upload is taken: the handler's own earlier checks
        (``handler.precheck``, optional). True if the request was or will be answered here."""
        precheck = getattr(self.handler, "precheck", None)
        if precheck is None:
            return False
        try:
            verdict = precheck(request)
        except Exception:
            log.failure("request precheck failed")
            verdict = response(coap.INTERNAL_SERVER_ERROR, b"internal server error", 0)
        if isinstance(verdict, defer.Deferred):
            verdict.addErrback(self._handler_failed)
            verdict.addCallback(self._prechecked, request, key)
            return True
        if verdict is not None:
            request.opt.deleteOption(coap.BLOCK1)
            self._answer(request, key, verdict)
            return True
        return False

    def _prechecked(self, verdict, request, key):
        if verdict is None:
            self._received_whole(request, key)
        else:
            request.opt.deleteOption(coap.BLOCK1)
            self._answer(request, key, verdict)

    def _received_whole(self, request, key):
        """Go on with a request that passed the checks above: blocks, observe, dispatch."""
        block1 = request.opt.block1
        if block1 is not None:
            request = self._assemble(request, key, block1)
            if request is None:
                return
        remote = request.remote
        request.protocol = self
        if request.code == coap.GET and request.opt.observe == 1:
            old = self.observations.get((remote[0], remote[1], request.token))
            if old is not None:
                old.cancel("deregistered")
        block2 = request.opt.block2
        if block2 is not None and block2.block_number:
            cached = self._large.get(self._large_key(request))
            if cached is not None:
                self._answer(request, key, _rebuild(cached))
                return
        self._dispatch(request, key)

    # -- answering ---------------------------------------------------------

    def _dispatch(self, request, key):
        try:
            result = self.handler(request)
        except Exception:
            log.failure("request handler failed")
            result = response(coap.INTERNAL_SERVER_ERROR, b"internal server error", 0)
        if not isinstance(result, defer.Deferred):
            self._answer(request, key, result)
            return
        pending = _Pending(request, key)
        result.addErrback(self._handler_failed)
        result.addCallback(self._deferred_answer, pending)
        if pending.key is not None and request.mtype == CON:
            pending.deadline = self.clock.seconds() + self.piggyback_window
            self._waiting.append(pending)
            if self._sweep is None:
                self._sweep = self.clock.callLater(self.piggyback_window, self._sweep_waiting)

    def _sweep_waiting(self):
        """Send an empty ACK for every CON request still unanswered after the piggyback window."""
        self._sweep = None
        now = self.clock.seconds()
        waiting = self._waiting
        while waiting and (waiting[0].key is None or waiting[0].deadline <= now):
            pending = waiting.popleft()
            if pending.key is not None:
                self._empty_ack(pending)
        if waiting:
            self._sweep = self.clock.callLater(max(0.0, waiting[0].deadline - now), self._sweep_waiting)

    def _handler_failed(self, failure):
        log.failure("request handler failed", failure)
        return response(coap.INTERNAL_SERVER_ERROR, b"internal server error", 0)

    def _deferred_answer(self, answer, pending):
        self._answer(pending.request, pending.key, answer, separate=pending.acked)
        pending.key = None  # marks it answered, also when that happened synchronously
        waiting = self._waiting
        while waiting and waiting[0].key is None:  # answers come mostly in order: drop them now
            waiting.popleft()

    def _empty_ack(self, pending):
        pending.acked = True
        request = pending.request
        data = self._send_empty(ACK, request.mid, request.remote)
        self.recent.replace(pending.key, data)

    def _answer(self, request, key, answer, separate=False):
        """Send ``answer`` to ``request``: piggybacked, NON or separate CON."""
        observation = getattr(request, "observation", None)
        if observation is not None:
            if observation.active and 64 <= answer.code < 96:
                answer.opt.observe = 0
            else:
                observation.cancel("refused")
                observation = None
        answer = self._blockwise(request, answer)
        answer.token = request.token
        if separate:
            answer.mtype = CON
            self.send_confirmable(answer, request.remote)
        else:
            answer.mtype = ACK if request.mtype == CON else NON
            answer.mid = request.mid if request.mtype == CON else self.nextMessageID()
            data = answer.encode()
            self._write(data, request.remote)
            if key is not None and request.mtype == CON:
                # an empty piggybacked answer is kept as its code (a small int: no allocation)
                self.recent.replace(key, answer.code if len(data) == 4 + len(request.token) else data)
        self.counters[answer.code] += 1
        if self.latency is not None:
            received = getattr(request, "received", None)
            if received is not None:
                self.latency.observe(perf_counter() - received)
        if observation is not None:
            observation.ready = True
            observation._pump()

    # -- observe -------------------------------------------------------------

    def observe(self, request, on_cancel=None):
        """Register an observation for a GET with Observe=0 (called by the handler).

        The answer to ``request`` then carries Observe 0 if it is 2.xx (else the
        observation is dropped); a registration with the same token from the same
        peer replaces the old one.  None when the limit per source address or in
        all is reached (counted).
        """
        host = self._intern(self._hosts, request.remote[0])
        remote = (host, request.remote[1])
        key = (host, remote[1], request.token)
        old = self.observations.get(key)
        if old is not None:
            old.cancel("replaced")
        peers = self._peer_observations
        if peers.get(host, 0) >= self.max_peer_observations:
            self.counters["observationsRefusedPeer"] += 1
            return None
        if len(self.observations) >= self.max_observations:
            self.counters["observationsRefused"] += 1
            return None
        block2 = request.opt.block2
        szx = min(self.block_szx, block2.size_exponent) if block2 is not None else self.block_szx
        path = self._intern(self._paths, (tuple(request.opt.uri_path), tuple(request.opt.uri_query)))
        observation = Observation(self, key, remote, request.token, request.mtype == CON, szx, path, on_cancel)
        self.observations[key] = observation
        peers[host] = peers.get(host, 0) + 1
        self._peer_relations.setdefault(remote, {})[key] = None
        request.observation = observation
        return observation

    @staticmethod
    def _intern(table, value):
        """One shared object per distinct value (host names, paths) held by many relations."""
        if len(table) >= MAX_HOSTS:
            table.clear()
        return table.setdefault(value, value)

    def _exchange_key(self, remote, mid):
        """(host, port, MID) as one int: ids for hosts keep the duplicate cache small and cheap to scan."""
        host_ids = self._host_ids
        host_id = host_ids.get(remote[0])
        if host_id is None:
            if len(host_ids) >= MAX_HOSTS:
                host_ids.clear()  # ids are never reused, so old keys cannot match new hosts
            host_id = host_ids[remote[0]] = self._next_host_id
            self._next_host_id += 1
        return (host_id << 32) | (remote[1] << 16) | mid

    def queue_charge(self, host, size) -> bool:
        """Charge a waiting notification to its source address (at most a 16th of the budget)
        and to the budget; False (nothing charged) if either is full."""
        queued = self._peer_queued.get(host, 0)
        if queued + size > self.max_peer_queued:
            self.notification_budget.refusals += 1
            return False
        if not self.notification_budget.take(size):
            return False
        self._peer_queued[host] = queued + size
        return True

    def queue_release(self, host, size):
        """Give back what ``queue_charge`` took."""
        if size:
            self.notification_budget.give(size)
            left = self._peer_queued[host] - size
            if left:
                self._peer_queued[host] = left
            else:
                del self._peer_queued[host]

    def forget_observation(self, observation):
        """An observation ended: it leaves the tables (O(1))."""
        if self.observations.get(observation.key) is observation:
            del self.observations[observation.key]
            host = observation.key[0]
            left = self._peer_observations[host] - 1
            if left:
                self._peer_observations[host] = left
            else:
                del self._peer_observations[host]
            relations = self._peer_relations[observation.remote]
            del relations[observation.key]
            if not relations:
                del self._peer_relations[observation.remote]

    def end_peer(self, remote, reason):
        """End every relation of one peer address (its DTLS session ended): O(its relations)."""
        relations = self._peer_relations.get((remote[0], remote[1]))
        for key in list(relations or ()):
            observation = self.observations.get(key)
            if observation is not None:
                observation.cancel(reason)

    def send_notification(self, observation, code, payload, content_format, on_result):
        """Queue one notification of ``observation`` for sending (the relation is busy until it is
        sent, and until acknowledged when CON).  Notifications leave in order, at most
        OUTBOX_BATCH per reactor turn, so notifying any number of relations never holds the reactor."""
        observation.in_flight = True
        self._outbox.append((observation, code, payload, content_format, on_result))
        if self._draining is None:
            self._draining = self.clock.callLater(0, self._drain)

    def _drain(self):
        self._draining = None
        outbox = self._outbox
        for _ in range(min(len(outbox), OUTBOX_BATCH)):
            self._transmit(*outbox.popleft())
        if outbox:
            self._draining = self.clock.callLater(0, self._drain)

    def _transmit(self, observation, code, payload, content_format, on_result):
        if not observation.active:
            observation.in_flight = False
            call_safely(on_result, "canceled")
            return
        answer = response(code, payload, content_format)
        final = not 64 <= code < 96
        if not final:
            observation.seq = (observation.seq + 1) & 0xFFFFFF
            answer.opt.observe = observation.seq
        answer = self._notification_blocks(observation, answer)
        answer.token = observation.token
        self.counters["notifications"] += 1
        now = self.clock.seconds()
        # RFC 7641 §4.5: a NON relation still gets a CON at least once a day, so a client that is
        # gone is found out (its relation ends) and relations cannot pile up forever
        if observation.confirmable or now - observation.confirmed >= CON_REFRESH:
            observation.confirmed = now
            answer.mtype = CON

            def done(outcome):
                observation.in_flight = False
                call_safely(on_result, outcome)
                if outcome != "ack":
                    observation.cancel(outcome)
                elif final:
                    observation.cancel("ended")
                else:
                    observation._pump()

            self.send_confirmable(answer, observation.remote, done)
        else:
            answer.mtype = NON
            answer.mid = self.nextMessageID()
            remote = observation.remote
            self._write(answer.encode(), remote)
            self._sent_non.put((remote[0], remote[1], answer.mid), weakref.ref(observation), now)
            observation.in_flight = False
            call_safely(on_result, "sent")
            if final:
                observation.cancel("ended")
            else:
                observation._pump()

    def _blockwise(self, request, answer):
        block1 = request.opt.block1
        if block1 is not None:
            answer.opt.addOption(BlockOption(coap.BLOCK1, (block1.block_number, False, block1.size_exponent)))
        block2 = request.opt.block2
        szx = min(self.block_szx, block2.size_exponent) if block2 is not None else self.block_szx
        size = 1 << (szx + 4)
        payload = answer.payload
        number = block2.block_number if block2 is not None else 0
        if len(payload) <= size and not number:
            return answer
        start = number * size
        if start >= len(payload):
            return response(coap.BAD_OPTION, b"block %d out of range" % number, 0)
        if number == 0:
            self._large.put(self._large_key(request), _snapshot(answer), self.clock.seconds())
            answer.opt.addOption(coap.UintOption(coap.SIZE2, len(payload)))
        answer.opt.addOption(_etag(payload))  # a block of a recomputed, different answer shows it
        answer.payload = payload[start:start + size]
        answer.opt.addOption(BlockOption(coap.BLOCK2, (number, start + size < len(payload), szx)))
        return answer

    def _notification_blocks(self, observation, answer):
        """A notification larger than the relation's block size goes out as block 0 with Size2; the
        client fetches the rest with GETs of the registered path, answered from the block cache."""
        size = 1 << (observation.szx + 4)
        payload = answer.payload
        if len(payload) <= size:
            return answer
        remote = observation.remote
        path, query = observation.path
        self._large.put((remote[0], remote[1], coap.GET, path, query), _snapshot(answer), self.clock.seconds())
        answer.opt.addOption(coap.UintOption(coap.SIZE2, len(payload)))
        answer.opt.addOption(_etag(payload))
        answer.payload = payload[:size]
        answer.opt.addOption(BlockOption(coap.BLOCK2, (0, True, observation.szx)))
        return answer

    def _large_key(self, request):
        remote = request.remote
        return (remote[0], remote[1], request.code, tuple(request.opt.uri_path), tuple(request.opt.uri_query))

    def _assemble(self, request, key, block1):
        """Add a Block1 block; the whole request when complete, else None (answered)."""
        number, more, szx = block1
        size = 1 << (szx + 4)
        ukey = self._large_key(request)
        now = self.clock.seconds()
        upload = self._new_upload(ukey, now) if number == 0 else self._uploads.get(ukey)
        fail = None
        if number == 0 and upload is None:
            fail = response(coap.SERVICE_UNAVAILABLE, b"too many uploads from this address", 0)
            fail.opt.addOption(coap.UintOption(coap.MAX_AGE, int(coap.MAX_TRANSMIT_WAIT)))
        elif szx == 7:
            fail = response(coap.BAD_REQUEST, b"block size exponent 7 is reserved", 0)
        elif upload is None or len(upload.data) != number * size:
            fail = response(coap.REQUEST_ENTITY_INCOMPLETE, b"block %d out of sequence" % number, 0)
        elif more and len(request.payload) != size:
            fail = response(coap.BAD_REQUEST, b"block payload does not match block size", 0)
        elif len(upload.data) + len(request.payload) > self.max_body or _size1(request) > self.max_body:
            fail = response(coap.REQUEST_ENTITY_TOO_LARGE, b"body over %d bytes" % self.max_body, 0)
            fail.opt.addOption(coap.UintOption(coap.SIZE1, self.max_body))
        if fail is not None:
            self._end_upload(ukey)
            request.opt.deleteOption(coap.BLOCK1)
            self._answer(request, key, fail)
            return None
        upload.data += request.payload
        if more:
            upload.expires = now + coap.MAX_TRANSMIT_WAIT
            self._uploads.move_to_end(ukey)  # least recently continued first: expiry pops from the front
            request.opt.deleteOption(coap.BLOCK1)
            cont = response(coap.CONTINUE)
            cont.opt.addOption(BlockOption(coap.BLOCK1, (number, True, szx)))
            self._answer(request, key, cont)
            return None
        self._end_upload(ukey)
        request.payload = bytes(upload.data)
        return request

    def _new_upload(self, ukey, now):
        """A fresh Block1 upload for ``ukey``, or None when its address has as many as it may.

        Stale uploads go first (from the front, O(1) each), then the oldest if all are in use.
        """
        uploads = self._uploads
        self._end_upload(ukey)
        while uploads and next(iter(uploads.values())).expires < now:
            self._end_upload(next(iter(uploads)))
        host = ukey[0]
        if self._peer_uploads.get(host, 0) >= MAX_PEER_UPLOADS:
            self.counters["uploadsRefused"] += 1
            return None
        while len(uploads) >= MAX_UPLOADS:
            self._end_upload(next(iter(uploads)))
            self.counters["uploadEvictions"] += 1
        upload = uploads[ukey] = _Upload(now + coap.MAX_TRANSMIT_WAIT)
        self._peer_uploads[host] = self._peer_uploads.get(host, 0) + 1
        return upload

    def _end_upload(self, ukey):
        if self._uploads.pop(ukey, None) is not None:
            host = ukey[0]
            left = self._peer_uploads[host] - 1
            if left:
                self._peer_uploads[host] = left
            else:
                del self._peer_uploads[host]

    # -- sending -----------------------------------------------------------

    def _send_empty(self, mtype, mid, remote):
        data = bytes(((1 << 6) | (mtype << 4), 0, mid >> 8, mid & 0xFF))
        self._write(data, remote)
        if mtype == RST:
            self.counters["rstSent"] += 1
        return data

    def sendMessage(self, message):
        """Send a message to ``message.remote``; a CON is retransmitted until acknowledged."""
        if message.mtype == CON:
            return self.send_confirmable(message, message.remote)
        if message.mid is None:
            message.mid = self.nextMessageID()
        self._write(message.encode(), message.remote)
        return message.mid

    def send_confirmable(self, message, remote, on_result=None):
        """Send a CON with a new MID; ``on_result("ack"|"rst"|"timeout")`` when it ends."""
        message.mid = self.nextMessageID()
        self.exchanges.start((remote[0], remote[1], message.mid), message.encode(), remote, on_result)
        return message.mid

    def startProtocol(self):
        self._socket = getattr(self.transport, "socket", None)

    def _write(self, data, remote):
        """Send a datagram (straight to the socket: the address came from it)."""
        if self._socket is None:
            self.transport.write(data, remote)
            return
        try:
            self._socket.sendto(data, remote)
        except OSError:
            self.counters["sendErrors"] += 1

    def stopProtocol(self):
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        self.exchanges.stop()
        if self._draining is not None and self._draining.active():
            self._draining.cancel()
        self._draining = None

    def stats(self):
        """Counters of this layer as a plain dict."""
        out = {"malformed": 0, "duplicates": 0, "rstSent": 0, "notifications": 0}
        out.update({code_text(k) if isinstance(k, int) else k: v for k, v in self.counters.items()})
        out["dedupEntries"] = len(self.recent)
        out["dedupEvictions"] = self.recent.evictions
        out["answerCacheBytes"] = self.answer_budget.used
        out["answerCacheEvictions"] = self.answer_budget.refusals
        out["dedupAnswersDropped"] = self.recent.shrunk
        out["blockAnswers"] = len(self._large)
        out["activeExchanges"] = len(self.exchanges)
        out["outbox"] = len(self._outbox)
        out["observations"] = len(self.observations)
        out["observingPeers"] = len(self._peer_observations)
        out["notificationBytes"] = self.notification_budget.used
        out["notificationBudgetRefusals"] = self.notification_budget.refusals
        return out


def _size1(request):
    option = request.opt.getOption(coap.SIZE1)
    return option[0].value if option else 0


def _answer_cost(value):
    """Bytes a duplicate-cache entry holds: an encoded answer, or nothing (a code or None)."""
    return len(value) if isinstance(value, bytes) else 0


def _etag(payload):
    """An ETag for the blocks of one answer (RFC 7959 §2.4): its CRC-32."""
    return coap.OpaqueOption(coap.ETAG, zlib.crc32(payload).to_bytes(4, "big"))


def _answer_code(data):
    """What a kept answer shrinks to for the byte budget: its code, negative (the payload is gone)."""
    return -data[1]


def _snapshot_cost(snapshot):
    return len(snapshot[1]) + SNAPSHOT_OVERHEAD


def _snapshot(answer):
    """What is needed to rebuild a large answer for its later blocks."""
    options = [o for o in answer.opt.optionList() if o.number not in (coap.BLOCK1, coap.BLOCK2, coap.SIZE2,
                                                                      coap.ETAG)]
    return answer.code, answer.payload, options


def _rebuild(snapshot):
    code, payload, options = snapshot
    message = coap.Message(code=code, payload=payload)
    for option in options:
        message.opt.addOption(option)
    return message
