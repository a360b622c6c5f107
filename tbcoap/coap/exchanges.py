"""Outgoing confirmable messages: retransmission with exponential backoff and one outcome each.

One timer serves every exchange: deadlines wait in a heap, and those that are due are handled at
most ``BATCH`` per reactor turn, so 100,000 exchanges timing out together never hold the reactor
for long.  A finished exchange leaves its heap entry behind (skipped when it comes up); the heap is
rebuilt from the live exchanges when such entries outnumber them, so it stays O(live) in memory
and O(1) amortized per exchange in time.
"""

from __future__ import annotations

import heapq
import random

from twisted.logger import Logger

log = Logger()

BATCH = 1000  # due exchanges handled per reactor turn
ACK_RANDOM_FACTOR = 1.5  # RFC 7252


class _Exchange:
    """A CON waiting for its ACK or RST."""

    __slots__ = ("data", "remote", "timeout", "tries", "deadline", "on_result")


class Exchanges:
    """The CON messages a layer sent and waits for, keyed by (host, port, MID)."""

    def __init__(self, clock, write, ack_timeout, max_retransmit, counters):
        self.clock, self.write = clock, write
        self.ack_timeout, self.max_retransmit = ack_timeout, max_retransmit
        self.counters = counters
        self.active = {}  # (host, port, mid) -> _Exchange
        self._heap = []   # (deadline, key); entries of finished exchanges are skipped
        self._stale = 0
        self._timer = None

    def __len__(self):
        return len(self.active)

    def start(self, key, data, remote, on_result=None):
        """Send ``data`` now and again until acknowledged; ``on_result("ack"|"rst"|"timeout")`` once."""
        exchange = _Exchange()
        exchange.data, exchange.remote, exchange.on_result, exchange.tries = data, remote, on_result, 0
        exchange.timeout = random.uniform(self.ack_timeout, self.ack_timeout * ACK_RANDOM_FACTOR)
        exchange.deadline = self.clock.seconds() + exchange.timeout
        self.active[key] = exchange
        self._push(exchange.deadline, key)
        self.write(data, remote)

    def done(self, key, outcome):
        """The peer answered ``key`` ("ack" or "rst"); reports it if the exchange was still open."""
        exchange = self.active.pop(key, None)
        if exchange is None:
            return
        self._stale += 1
        _report(exchange, outcome)
        if self._stale > len(self.active) + 1024:
            self._rebuild()

    def stop(self):
        """Forget every exchange (the port is closing); no outcomes are reported."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.active.clear()
        self._heap, self._stale = [], 0

    def _push(self, deadline, key):
        heapq.heappush(self._heap, (deadline, key))
        if self._timer is None:
            self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._fire)
        elif deadline < self._timer.getTime():
            self._timer.reset(max(0.0, deadline - self.clock.seconds()))

    def _rebuild(self):
        self._heap = [(exchange.deadline, key) for key, exchange in self.active.items()]
        heapq.heapify(self._heap)
        self._stale = 0

    def _fire(self):
        self._timer = None
        heap, active = self._heap, self.active
        now = self.clock.seconds()
        handled = 0
        while heap and heap[0][0] <= now and handled < BATCH:
            deadline, key = heapq.heappop(heap)
            exchange = active.get(key)
            if exchange is None or exchange.deadline != deadline:
                self._stale = max(0, self._stale - 1)
                continue
            handled += 1
            if exchange.tries >= self.max_retransmit:
                del active[key]
                self.counters["exchangeTimeouts"] += 1
                _report(exchange, "timeout")
                continue
            exchange.tries += 1
            exchange.timeout *= 2
            exchange.deadline = now + exchange.timeout
            heapq.heappush(heap, (exchange.deadline, key))
            self.write(exchange.data, exchange.remote)
        if heap and self._timer is None:
            self._timer = self.clock.callLater(max(0.0, heap[0][0] - now), self._fire)  # 0: the rest, next turn


def _report(exchange, outcome):
    if exchange.on_result is not None:
        try:
            exchange.on_result(outcome)
        except Exception:
            log.failure("exchange result callback failed")
