"""Observe relations (RFC 7641) of the message layer, bounded in number and in bytes.

An ``Observation`` keeps only what its notifications need (the peer, the token, CON or NON,
the block size and the path for later blocks), sends notifications in order with one CON in
flight, and charges what waits in its queue to itself, to its source address and to a
``ByteBudget`` shared by every relation.
Ending a relation costs O(1): nothing here scans other relations.
"""

from __future__ import annotations

from collections import deque

from twisted.logger import Logger

log = Logger()

MAX_QUEUED = 1000  # notifications waiting in one relation before it is ended
MAX_QUEUED_BYTES = 256 << 10  # bytes waiting in one relation before it is ended
QUEUED_OVERHEAD = 160  # bytes a waiting notification costs besides its payload (tuple, deque slot)
SERVICE_UNAVAILABLE = (5 << 5) | 3
EMPTY = ()  # the queue of a relation with nothing waiting (an empty deque costs 600 bytes)


class Observation:
    """An observe relation, keyed by (host, port, token).

    ``notify(answer, on_result)`` sends a notification: CON or NON like the registering GET
    (a NON relation gets a CON once a day), Observe numbers from 0 (the registration answer)
    up by one, one CON in flight at a time (later ones wait in order, their bytes charged to
    the layer's notification budget).  ``on_result`` of each notification gets "ack" (CON
    acknowledged), "sent" (NON sent), "rst", "timeout" or "canceled".  An RST, an
    unacknowledged CON, a non-2.xx notification, more than MAX_QUEUED waiting notifications
    or a full budget end the relation; ``on_cancel(observation, reason)`` is called once.
    ``on_idle()``, if set, is called whenever the relation has nothing in flight and nothing
    waiting; ``tag`` is free for the owner (the device id, say).
    """

    __slots__ = ("layer", "key", "remote", "token", "confirmable", "szx", "path", "seq", "queue", "queued_bytes",
                 "in_flight", "ready", "active", "ending", "confirmed", "on_cancel", "on_idle", "tag", "__weakref__")

    def __init__(self, layer, key, remote, token, confirmable, szx, path, on_cancel=None):
        self.layer, self.key, self.on_cancel, self.on_idle, self.tag = layer, key, on_cancel, None, None
        self.remote, self.token, self.confirmable, self.szx, self.path = remote, token, confirmable, szx, path
        self.seq, self.queue, self.queued_bytes = 0, EMPTY, 0  # a deque only once something waits
        self.in_flight, self.ready, self.active, self.ending = False, False, True, False
        self.confirmed = layer.clock.seconds()  # when the client last confirmed it is there

    @property
    def idle(self) -> bool:
        """True when a notification given now would go out at once."""
        return self.active and self.ready and not self.in_flight and not self.queue and not self.ending

    def notify(self, answer, on_result=None):
        """Send one notification now if the relation is free, else queue it (a response Message:
        its code, payload and Content-Format).  What waits is charged to the relation (at most
        MAX_QUEUED notifications and MAX_QUEUED_BYTES) and to the layer's budgets, per source
        address and in all; past any of them the relation ends."""
        self.notify_raw(answer.code, answer.payload, answer.opt.content_format, on_result)

    def notify_raw(self, code, payload, content_format, on_result=None):
        """``notify`` without a Message: the code, payload bytes and Content-Format (or None)."""
        if not self.active or self.ending:
            call_safely(on_result, "canceled")
            return
        if self.idle:
            self.layer.send_notification(self, code, payload, content_format, on_result)
            return
        cost = len(payload) + QUEUED_OVERHEAD
        if len(self.queue) >= MAX_QUEUED or self.queued_bytes + cost > MAX_QUEUED_BYTES \
                or not self.layer.queue_charge(self.remote[0], cost):
            self._overflow(on_result)
            return
        if self.queue is EMPTY:
            self.queue = deque()
        self.queue.append((code, payload, content_format, on_result, cost))
        self.queued_bytes += cost
        self._pump()

    def _overflow(self, on_result):
        """The client does not keep up (or memory is short): end the relation, telling it.

        It leaves service at once (its owner and the layer's counts forget it); only the
        final 5.03 is still sent."""
        self.layer.counters["observationsOverflowed"] += 1
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

    def _leave(self, reason):
        """Out of the layer's tables and its owner's, once."""
        self.layer.forget_observation(self)
        on_cancel, self.on_cancel, self.on_idle = self.on_cancel, None, None
        call_safely(on_cancel, self, reason)

    def _drop_queue(self):
        queued, self.queue = self.queue, EMPTY
        self.layer.queue_release(self.remote[0], self.queued_bytes)
        self.queued_bytes = 0
        for item in queued:
            call_safely(item[3], "canceled")

    def _pump(self):
        while self.active and self.ready and not self.in_flight and self.queue:
            code, payload, content_format, on_result, cost = self.queue.popleft()
            if not self.queue:
                self.queue = EMPTY
            self.queued_bytes -= cost
            self.layer.queue_release(self.remote[0], cost)
            self.layer.send_notification(self, code, payload, content_format, on_result)
        if self.on_idle is not None and self.idle:
            call_safely(self.on_idle)


def call_safely(callback, *args):
    """Call ``callback(*args)`` unless it is None; a failure is logged, never raised."""
    if callback is not None:
        try:
            callback(*args)
        except Exception:
            log.failure("observe callback failed")
