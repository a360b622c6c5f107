"""Time-series retention: expired points are deleted in the background, in small batches.

A point expires when it is older than ``--ts-ttl`` (when set), or when its own time to live (given
through REST) has passed. A pass runs at least every minute (sooner when the TTL is shorter) and
asks the store for one batch after another and pauses after each, so that deleting takes a small
share of the store's time: BUSY_SHARE (5%) while devices are writing (the store committed writes
other than this one since the previous batch), IDLE_SHARE (50%) when they are not. Writes never wait behind more than
one small batch. Latest values are never deleted.  After the deletions, a pass brings the rollups
up to date the same way (``rollup_telemetry``: the days behind each series' watermark, dirty days).
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger

from tbcoap.models import now_ms

log = Logger()

BATCH = 500  # points one store call deletes at most
PAUSE = 0.02  # seconds between two batches of a pass, at least ...
BUSY_SHARE = 0.05  # ... and enough that deleting takes at most this share of the store's time
IDLE_SHARE = 0.5  # ... or this share when no write was committed since the previous batch
MAX_INTERVAL = 60.0
ROLLUP_FACTOR = 20  # a rollup batch reads this many times as many points as a deletion batch


class RetentionService:
    """Runs retention passes on ``clock``; ``expired`` counts the points deleted here."""

    def __init__(self, store, ttl_ms=0, clock=None, batch=BATCH, pause=PAUSE):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store, self.ttl_ms, self.clock = store, ttl_ms, clock
        self.batch, self.pause = batch, pause
        self.interval = min(MAX_INTERVAL, max(1.0, ttl_ms / 2000)) if ttl_ms else MAX_INTERVAL
        self.expired = 0
        self.rolled = 0  # points the rollup batches read (tbcoap.rollupkit)
        self.passes = 0
        self._loop = None
        self._running = None
        self._early = None  # a pass sooner than the loop's next, for a point whose own TTL ends first

    def start(self):
        self._loop = task.LoopingCall(self.run_pass)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def expect(self, expires_ms):
        """A point's own time to live ends at ``expires_ms``: run a pass then, when that is before
        the next pass (one waiting call at most: O(1) however many points are written)."""
        if self._loop is None or not self._loop.running:
            return
        delay = max(0.0, (expires_ms - now_ms()) / 1000) + 0.05
        if delay >= self.interval:
            return
        when = self.clock.seconds() + delay
        if self._early is not None and self._early.active() and self._early.getTime() <= when:
            return
        if self._early is not None and self._early.active():
            self._early.cancel()
        self._early = self.clock.callLater(delay, self.run_pass)

    def stop(self):
        """Stop after the batch under way (the Deferred fires then)."""
        if self._early is not None and self._early.active():
            self._early.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running if self._running is not None else defer.succeed(None)

    def run_pass(self):
        """One pass: batches until the store says nothing more has expired. Fires with the points deleted."""
        if self._running is not None:
            return self._running
        self._running = self._pass()
        return self._running.addBoth(self._done)

    def _done(self, result):
        self._running = None
        if isinstance(result, int):
            return result
        log.failure("retention pass failed (the next pass tries again)", result)
        return 0

    @defer.inlineCallbacks
    def _pass(self):
        deleted = yield self._batches(self._expire)
        if not self._stopping() and hasattr(self.store, "rollup_telemetry"):  # a store with rollups
            self.rolled += yield self._batches(self._rollup)
        self.passes += 1
        if deleted:
            log.info("retention deleted {count} expired time-series points", count=deleted)
        return deleted

    def _expire(self):
        now = now_ms()
        return self.store.expire_telemetry(now, now - self.ttl_ms if self.ttl_ms else None, self.batch)

    @defer.inlineCallbacks
    def _rollup(self):
        count, more = yield self.store.rollup_telemetry(now_ms(), self.batch * ROLLUP_FACTOR)
        return count, more

    @defer.inlineCallbacks
    def _batches(self, call):
        """Call ``call`` (a store call firing with ``(count, more)``) until nothing more is left,
        pausing after each batch; the total count."""
        total = 0
        writes = self._writes()
        while True:
            started = self.clock.seconds()
            count, more = yield call()
            took = self.clock.seconds() - started
            total += count
            if call == self._expire:
                self.expired += count
            if not more or self._stopping():
                break
            now_writes = self._writes()
            share = IDLE_SHARE if now_writes - writes <= 1 else BUSY_SHARE  # the one is this batch
            writes = now_writes
            yield task.deferLater(self.clock, max(self.pause, took * (1 - share) / share), lambda: None)
            if self._stopping():
                break
        return total

    def _stopping(self):
        return self._loop is not None and not self._loop.running

    def _writes(self):
        """The store's count of committed writes (its ``stats()["writes"]``)."""
        return self.store.stats().get("writes", 0)

    def stats(self):
        return {"ttlMs": self.ttl_ms, "passes": self.passes, "expiredPoints": self.expired, "rolledPoints": self.rolled,
                "intervalSeconds": self.interval}
