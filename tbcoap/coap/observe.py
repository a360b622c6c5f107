"""Observe relations (RFC 7641) of the message layer, bounded in number and in bytes.

An ``Observation`` keeps only what its notifications need (the peer, the token, CON or NON,
the block size and the path for later blocks), sends notifications in order with one CON in
flight, and charges what waits in its queue to itself, to its source address and to a
``ByteBudget`` shared by every relation.  ``Observations`` is one layer's table of them: the
caps per source address and in all, the byte budget of waiting notifications, and the outbox
that sends at most OUTBOX_BATCH notifications per reactor turn.
Ending a relation costs O(1): nothing here scans other relations.
"""

from __future__ import annotations

import weakref
from collections import deque

from twisted.logger import Logger

from tbcoap.coap.budget import ByteBudget
from tbcoap.coap.codec import CON, NON, response
from tbcoap.coap.recent import RecentMap

log = Logger()

MAX_QUEUED = 1000  # notifications waiting in one relation before it is ended
MAX_QUEUED_BYTES = 256 << 10  # bytes waiting in one relation before it is ended
QUEUED_OVERHEAD = 160  # bytes a waiting notification costs besides its payload (tuple, deque slot)
SERVICE_UNAVAILABLE = (5 << 5) | 3
EMPTY = ()  # the queue of a relation with nothing waiting (an empty deque costs 600 bytes)
OUTBOX_BATCH = 1000  # notifications sent per reactor turn
PEER_SHARE = 16  # one source address may hold at most this fraction of the notification budget
CON_REFRESH = 24 * 3600.0  # a NON relation gets a CON notification at least this often
NON_LIFETIME = 145.0  # RFC 7252 §4.8.2
MAX_SENT_NON = 100_000  # NON notifications remembered so that an RST to one ends its relation
MAX_INTERNED = 200_000  # distinct host names and paths shared by relations (then forgotten at once)


class Observation:
    """An observe relation, keyed by (host, port, token), in the ``table`` of its layer.

    ``notify(answer, on_result)`` sends a notification: CON or NON like the registering GET
    (a NON relation gets a CON once a day), Observe numbers from 0 (the registration answer)
    up by one, one CON in flight at a time (later ones wait in order, their bytes charged to
    the table's notification budget).  ``on_result`` of each notification gets "ack" (CON
    acknowledged), "sent" (NON sent), "rst", "timeout" or "canceled".  An RST, an
    unacknowledged CON, a non-2.xx notification, more than MAX_QUEUED waiting notifications
    or a full budget end the relation; ``on_cancel(observation, reason)`` is called once.
    ``on_idle()``, if set, is called whenever the relation has nothing in flight and nothing
    waiting; ``tag`` is free for the owner (the device id, say).
    """

    __slots__ = ("table", "key", "remote", "token", "confirmable", "szx", "path", "seq", "queue", "queued_bytes",
                 "in_flight", "ready", "active", "ending", "confirmed", "on_cancel", "on_idle", "tag", "__weakref__")

    def __init__(self, table, key, remote, token, confirmable, szx, path, on_cancel=None):
        self.table, self.key, self.on_cancel, self.on_idle, self.tag = table, key, on_cancel, None, None
        self.remote, self.token, self.confirmable, self.szx, self.path = remote, token, confirmable, szx, path
        self.seq, self.queue, self.queued_bytes = 0, EMPTY, 0  # a deque only once something waits
        self.in_flight, self.ready, self.active, self.ending = False, False, True, False
        self.confirmed = table.clock.seconds()  # when the client last confirmed it is there

    @property
    def idle(self) -> bool:
        """True when a notification given now would go out at once."""
        return self.active and self.ready and not self.in_flight and not self.queue and not self.ending

    def notify(self, answer, on_result=None):
        """Send one notification now if the relation is free, else queue it (a response Message:
        its code, payload and Content-Format).  What waits is charged to the relation (at most
        MAX_QUEUED notifications and MAX_QUEUED_BYTES) and to the table's budgets, per source
        address and in all; past any of them the relation ends."""
        self.notify_raw(answer.code, answer.payload, answer.opt.content_format, on_result)

    def notify_raw(self, code, payload, content_format, on_result=None):
        """``notify`` without a Message: the code, payload bytes and Content-Format (or None)."""
        if not self.active or self.ending:
            call_safely(on_result, "canceled")
            return
        if self.idle:
            self.table.send(self, code, payload, content_format, on_result)
            return
        cost = len(payload) + QUEUED_OVERHEAD
        if len(self.queue) >= MAX_QUEUED or self.queued_bytes + cost > MAX_QUEUED_BYTES \
                or not self.table.queue_charge(self.remote[0], cost):
            self._overflow(on_result)
            return
        if self.queue is EMPTY:
            self.queue = deque()
        self.queue.append((code, payload, content_format, on_result, cost))
        self.queued_bytes += cost
        self._pump()

    def _overflow(self, on_result):
        """The client does not keep up (or memory is short): end the relation, telling it.

        It leaves service at once (its owner and the table forget it); only the
        final 5.03 is still sent."""
        self.table.counters["observationsOverflowed"] += 1
        self._drop_queue()
        call_safely(on_result, "canceled")
        self.ending = True
        self._leave("overflowed")
        text = b"too many notifications waiting"
        self.queue = deque([(SERVICE_UNAVAILABLE, text, 0, None, 0)])
        self._pump()

    def cancel(self, reason="canceled"):
        """End the relation without telling the client."""
        if not self.active:
            return
        self.active = False
        self._drop_queue()
        self._leave(reason)

    def registered(self):
        """The registration's 2.xx answer went out: notifications may follow it."""
        self.ready = True
        self._pump()

    def sent(self, outcome, on_result, final):
        """A notification given to the table went out ("sent", NON) or ended ("ack", "rst",
        "timeout"): tell its sender, then end the relation or send what waits."""
        self.in_flight = False
        call_safely(on_result, outcome)
        if outcome != "ack" and outcome != "sent":
            self.cancel(outcome)
        elif final:
            self.cancel("ended")
        else:
            self._pump()

    def _leave(self, reason):
        """Out of the layer's table and its owner's, once."""
        self.table.forget(self)
        on_cancel, self.on_cancel, self.on_idle = self.on_cancel, None, None
        call_safely(on_cancel, self, reason)

    def _drop_queue(self):
        queued, self.queue = self.queue, EMPTY
        self.table.queue_release(self.remote[0], self.queued_bytes)
        self.queued_bytes = 0
        for item in queued:
            call_safely(item[3], "canceled")

    def _pump(self):
        while self.active and self.ready and not self.in_flight and self.queue:
            code, payload, content_format, on_result, cost = self.queue.popleft()
            if not self.queue:
                self.queue = EMPTY
            self.queued_bytes -= cost
            self.table.queue_release(self.remote[0], cost)
            self.table.send(self, code, payload, content_format, on_result)
        if self.on_idle is not None and self.idle:
            call_safely(self.on_idle)


class Observations:
    """The observe relations of one message layer and their notifications on the way out.

    Relations are capped per source address and in all; the bytes of waiting notifications
    per source address (a PEER_SHARE-th of the budget) and in all.  ``send`` puts a
    notification in the outbox, which sends at most OUTBOX_BATCH per reactor turn through the
    layer (``send_confirmable``, ``sendMessage``), large ones as a first block (``blocks``).
    """

    def __init__(self, layer, blocks, *, max_observations, max_peer_observations, notification_bytes):
        self.layer, self.blocks, self.clock, self.counters = layer, blocks, layer.clock, layer.counters
        self.by_key = {}  # (host, port, token) -> Observation
        self.max_observations = max_observations
        self.max_peer_observations = max_peer_observations
        self.budget = ByteBudget(notification_bytes)  # bytes of notifications waiting, in all
        self.max_peer_queued = max(notification_bytes // PEER_SHARE, 1)
        self._peer_queued = {}  # host -> bytes of notifications waiting for it
        self._peer_counts = {}  # host -> how many relations it has
        self._peer_relations = {}  # (host, port) -> {key: None} of its relations (ended with a DTLS session)
        self._hosts = {}  # interned host names: relations of one host share one
        self._paths = {}  # interned (path, query): relations of one resource share one
        self._outbox = deque()  # notifications to send, in order
        self._draining = None
        self._sent_non = RecentMap(NON_LIFETIME, MAX_SENT_NON)  # (host, port, MID) of NON notifications

    def __len__(self):
        return len(self.by_key)

    def register(self, request, on_cancel=None):
        """A relation for a GET with Observe=0, or None when its source address or the table is
        full (counted); one with the same peer and token is replaced."""
        host = _intern(self._hosts, request.remote[0])
        remote = (host, request.remote[1])
        key = (host, remote[1], request.token)
        old = self.by_key.get(key)
        if old is not None:
            old.cancel("replaced")
        peers = self._peer_counts
        if peers.get(host, 0) >= self.max_peer_observations:
            self.counters["observationsRefusedPeer"] += 1
            return None
        if len(self.by_key) >= self.max_observations:
            self.counters["observationsRefused"] += 1
            return None
        szx = self.blocks.szx_for(request)
        path = _intern(self._paths, (tuple(request.opt.uri_path), tuple(request.opt.uri_query)))
        observation = Observation(self, key, remote, request.token, request.mtype == CON, szx, path, on_cancel)
        self.by_key[key] = observation
        peers[host] = peers.get(host, 0) + 1
        self._peer_relations.setdefault(remote, {})[key] = None
        return observation

    def deregister(self, remote, token):
        """A GET with Observe=1 ends the peer's relation of that token, if any."""
        old = self.by_key.get((remote[0], remote[1], token))
        if old is not None:
            old.cancel("deregistered")

    def reset(self, remote, mid):
        """An RST answered the NON notification ``mid``: its relation ends, if it is still known."""
        observation = self._sent_non.get((remote[0], remote[1], mid))
        observation = observation() if observation is not None else None
        if observation is not None:
            observation.cancel("rst")

    def end_peer(self, remote, reason):
        """End every relation of one peer address: O(its relations)."""
        relations = self._peer_relations.get((remote[0], remote[1]))
        for key in list(relations or ()):
            observation = self.by_key.get(key)
            if observation is not None:
                observation.cancel(reason)

    def forget(self, observation):
        """An observation ended: it leaves the table (O(1))."""
        if self.by_key.get(observation.key) is observation:
            del self.by_key[observation.key]
            host = observation.key[0]
            left = self._peer_counts[host] - 1
            if left:
                self._peer_counts[host] = left
            else:
                del self._peer_counts[host]
            relations = self._peer_relations[observation.remote]
            del relations[observation.key]
            if not relations:
                del self._peer_relations[observation.remote]

    def queue_charge(self, host, size) -> bool:
        """Charge a waiting notification to its source address (at most a PEER_SHARE-th of the
        budget) and to the budget; False (nothing charged) if either is full."""
        queued = self._peer_queued.get(host, 0)
        if queued + size > self.max_peer_queued:
            self.budget.refusals += 1
            return False
        if not self.budget.take(size):
            return False
        self._peer_queued[host] = queued + size
        return True

    def queue_release(self, host, size):
        """Give back what ``queue_charge`` took."""
        if size:
            self.budget.give(size)
            left = self._peer_queued[host] - size
            if left:
                self._peer_queued[host] = left
            else:
                del self._peer_queued[host]

    def send(self, observation, code, payload, content_format, on_result):
        """Queue one notification of ``observation`` for sending (the relation is busy until it is
        sent, and until acknowledged when CON).  Notifications leave in order, at most
        OUTBOX_BATCH per reactor turn, so notifying any number of relations never holds the reactor."""
        observation.in_flight = True
        self._outbox.append((observation, code, payload, content_format, on_result))
        if self._draining is None:
            self._draining = self.clock.callLater(0, self._drain)

    def stop(self):
        """The port is closing: nothing more leaves the outbox."""
        if self._draining is not None and self._draining.active():
            self._draining.cancel()
        self._draining = None

    def stats(self, out):
        """Add this table's figures to the layer's ``out``."""
        out["outbox"] = len(self._outbox)
        out["observations"] = len(self.by_key)
        out["observingPeers"] = len(self._peer_counts)
        out["notificationBytes"] = self.budget.used
        out["notificationBudgetRefusals"] = self.budget.refusals

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
        answer = self.blocks.first_block(observation.remote, observation.path, observation.szx, answer)
        answer.token = observation.token
        self.counters["notifications"] += 1
        now = self.clock.seconds()
        remote = observation.remote
        # RFC 7641 §4.5: a NON relation still gets a CON at least once a day, so a client that is
        # gone is found out (its relation ends) and relations cannot pile up forever
        if observation.confirmable or now - observation.confirmed >= CON_REFRESH:
            observation.confirmed = now
            answer.mtype = CON
            self.layer.send_confirmable(answer, remote,
                                        lambda outcome: observation.sent(outcome, on_result, final))
        else:
            answer.mtype, answer.remote = NON, remote
            mid = self.layer.sendMessage(answer)
            self._sent_non.put((remote[0], remote[1], mid), weakref.ref(observation), now)
            observation.sent("sent", on_result, final)


def _intern(table, value):
    """One shared object per distinct value (host names, paths) held by many relations."""
    if len(table) >= MAX_INTERNED:
        table.clear()
    return table.setdefault(value, value)


def call_safely(callback, *args):
    """Call ``callback(*args)`` unless it is None; a failure is logged, never raised."""
    if callback is not None:
        try:
            callback(*args)
        except Exception:
            log.failure("observe callback failed")
