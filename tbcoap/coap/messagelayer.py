"""The message layer: txThings' ``Coap`` protocol, made RFC 7252/7959-correct for a server.

txThings 0.3.0 stays the protocol class and the message/option model; this
module overrides (never patches) what it gets wrong:

- ``datagramReceived`` validates before decoding (``codec.decode``): malformed
  datagrams never raise, a malformed CON gets RST, a malformed NON or a bad
  version is dropped; all are counted.
- duplicate detection in a bounded ``RecentMap`` keyed by (host, port, MID),
  no timer per message; a duplicate CON gets the same answer again.
- outgoing CON exchanges keyed by (host, port, MID); a retransmission that
  gives up, an ACK and an RST are reported to the sender's callback.
- answers are piggybacked when ready within the piggyback window, else an
  empty ACK (no token) and a separate CON; NON requests get NON answers only.
- no per-message logging.

Block-wise transfers are ``blockwise.Blockwise``'s, observe relations and their
notifications ``observe.Observations``'.  The request handler is a callable
``handler(request) -> Message | Deferred`` that knows nothing of this layer; the
answer's code, payload and options are its business, type, MID, token and blocks
are this layer's.
"""

from __future__ import annotations

from collections import Counter, deque
from time import perf_counter

from twisted.internet import defer
from twisted.logger import Logger
from txthings import coap

from tbcoap.coap.blockwise import BLOCK_SZX, Blockwise
from tbcoap.coap.budget import ByteBudget
from tbcoap.coap.codec import (ACK, CON, NON, RST, Malformed, code_text, decode, encode, encode_bare_ack, encode_empty,
                               response)
from tbcoap.coap.exchanges import Exchanges
from tbcoap.coap.observe import Observations
from tbcoap.coap.recent import RecentMap

log = Logger()

MAX_HOSTS = 200_000  # distinct peer addresses remembered for exchange keys (then forgotten at once)


class _Pending:
    """A request whose answer is a Deferred that has not fired yet."""

    __slots__ = ("request", "key", "deadline", "acked")

    def __init__(self, request, key):
        self.request, self.key, self.deadline, self.acked = request, key, 0.0, False


class MessageLayer(coap.Coap):
    """A txThings ``Coap`` protocol for servers: correct, bounded and quiet."""

    def __init__(self, handler, *, max_body=65536, piggyback_window=0.5, block_szx=BLOCK_SZX,
                 dedup_cap=1_000_000, ack_timeout=coap.ACK_TIMEOUT, max_retransmit=coap.MAX_RETRANSMIT,
                 max_observations=100_000, max_peer_observations=1000, notification_bytes=64 << 20,
                 answer_cache=64 << 20, clock=None):
        super().__init__(endpoint=None)
        self.handler = handler
        self.piggyback_window = piggyback_window
        if clock is None:
            from twisted.internet import reactor as clock  # late: the application chooses the reactor
        self.clock = clock
        self.counters = Counter()
        self.refusing = False  # set while shutting down: new requests get 5.03
        self.identify = None  # over DTLS: address -> identity of the peer's certificate, or None
        self.latency = None  # a LatencyHistogram of receipt-to-answer times, when metrics want them
        self.answer_budget = ByteBudget(answer_cache)  # answers kept for duplicates and for Block2
        self.recent = RecentMap(coap.EXCHANGE_LIFETIME, dedup_cap, self.answer_budget, _answer_cost, _answer_code)
        self.exchanges = Exchanges(self.clock, self._write, ack_timeout, max_retransmit, self.counters)
        self.blocks = Blockwise(self.clock, self.counters, self.answer_budget, max_body=max_body,
                                block_szx=block_szx)
        self.relations = Observations(self, self.blocks, max_observations=max_observations,
                                      max_peer_observations=max_peer_observations,
                                      notification_bytes=notification_bytes)
        self.observations = self.relations.by_key  # (host, port, token) -> Observation (replaces txThings')
        self.notification_budget = self.relations.budget
        self._host_ids = {}
        self._next_host_id = 1
        self._waiting = deque()  # CON requests answered later, oldest first: one timer for all
        self._sweep = None
        self._socket = None

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
                self.relations.reset(remote, message.mid)

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
                    answer = encode_bare_ack(abs(answer), request.mid, request.token)
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
            answer = self.blocks.assemble(request, block1)
            if answer is not None:
                self._answer(request, key, answer)
                return
        request.protocol = self
        if request.code == coap.GET and request.opt.observe == 1:
            self.relations.deregister(request.remote, request.token)
        block2 = request.opt.block2
        if block2 is not None and block2.block_number:
            kept = self.blocks.later_block(request)
            if kept is not None:
                self._answer(request, key, kept)
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
        result.addCallbacks(self._deferred_answer, self._deferred_failed, (pending,), None, (pending,))
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

    def _deferred_failed(self, failure, pending):
        self._deferred_answer(self._handler_failed(failure), pending)

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
        answer = self.blocks.shape(request, answer)
        answer.token = request.token
        if separate:
            answer.mtype = CON
            self.send_confirmable(answer, request.remote)
        else:
            answer.mtype = ACK if request.mtype == CON else NON
            answer.mid = request.mid if request.mtype == CON else self.nextMessageID()
            data = encode(answer)
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
            observation.registered()

    # -- observe -------------------------------------------------------------

    def observe(self, request, on_cancel=None):
        """Register an observation for a GET with Observe=0 (called by the handler).

        The answer to ``request`` then carries Observe 0 if it is 2.xx (else the
        observation is dropped); a registration with the same token from the same
        peer replaces the old one.  None when the limit per source address or in
        all is reached (counted).
        """
        observation = self.relations.register(request, on_cancel)
        if observation is not None:
            request.observation = observation
        return observation

    def end_peer(self, remote, reason):
        """End every relation of one peer address (its DTLS session ended): O(its relations)."""
        self.relations.end_peer(remote, reason)

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

    # -- sending -----------------------------------------------------------

    def _send_empty(self, mtype, mid, remote):
        data = encode_empty(mtype, mid)
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
        self._write(encode(message), message.remote)
        return message.mid

    def send_confirmable(self, message, remote, on_result=None):
        """Send a CON with a new MID; ``on_result("ack"|"rst"|"timeout")`` when it ends."""
        message.mid = self.nextMessageID()
        self.exchanges.start((remote[0], remote[1], message.mid), encode(message), remote, on_result)
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
        self.relations.stop()

    def stats(self):
        """Counters of this layer as a plain dict."""
        out = {"malformed": 0, "duplicates": 0, "rstSent": 0, "notifications": 0}
        out.update({code_text(k) if isinstance(k, int) else k: v for k, v in self.counters.items()})
        out["dedupEntries"] = len(self.recent)
        out["dedupEvictions"] = self.recent.evictions
        out["answerCacheBytes"] = self.answer_budget.used
        out["answerCacheEvictions"] = self.answer_budget.refusals
        out["dedupAnswersDropped"] = self.recent.shrunk
        out["blockAnswers"] = len(self.blocks)
        out["activeExchanges"] = len(self.exchanges)
        self.relations.stats(out)
        return out


def _answer_cost(value):
    """Bytes a duplicate-cache entry holds: an encoded answer, or nothing (a code or None)."""
    return len(value) if isinstance(value, bytes) else 0


def _answer_code(data):
    """What a kept answer shrinks to for the byte budget: its code, negative (the payload is gone)."""
    return -data[1]
