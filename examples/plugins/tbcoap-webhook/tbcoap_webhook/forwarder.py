"""The queue and its sender: events POSTed in order, in batches, one POST at a time, with retries."""

from collections import deque

from twisted.internet import defer, task
from twisted.logger import Logger

from tbcoap_webhook.events import batch_body
from tbcoap_webhook.settings import MAX_BACKOFF

log = Logger()

RETRIED_4XX = (408, 429)


class Forwarder:
    """Holds encoded events and sends them through ``post(body)``, a Deferred firing with the HTTP status.

    ``add`` only queues, so a caller is never delayed.  A batch goes out when
    ``batch_size`` events wait or ``batch_wait`` seconds after its oldest
    event was queued, whichever is first; only one batch is in flight.
    """

    def __init__(self, post, clock, *, batch_size=100, batch_wait=1.0, queue_size=10000, retries=5,
                 backoff=0.5, timeout=10.0, max_backoff=MAX_BACKOFF):
        self.post, self.clock = post, clock
        self.batch_size, self.batch_wait, self.queue_size = batch_size, batch_wait, queue_size
        self.retries, self.backoff, self.timeout, self.max_backoff = retries, backoff, timeout, max_backoff
        self.waiting = deque()  # (time queued, encoded event), oldest first
        self.in_flight = []     # the encoded events of the batch being sent (retries included)
        self.counters = {"sent": 0, "batches": 0, "retries": 0, "dropped": 0, "failed": 0}
        self.last_error = None
        self._timer = None      # batch-wait of the oldest waiting event
        self._pending = None    # the POST or the backoff wait under way
        self._full = False      # dropping since the last accepted event (log once)
        self._closing = None    # Deferreds waiting for close(), once it was called
        self._deadline = None
        self._abandoned = False

    def held(self):
        """Events not yet delivered nor given up: waiting or in flight."""
        return len(self.waiting) + len(self.in_flight)

    def stats(self):
        return {"queued": self.held(), **self.counters, "lastError": self.last_error}

    def add(self, encoded):
        """Queue one encoded event; False (counted as dropped) when full or closing."""
        if self._closing is not None or self.held() >= self.queue_size:
            self.counters["dropped"] += 1
            if not self._full:
                self._full = True
                log.warn("webhook: queue full ({size} events) or closing: dropping events", size=self.queue_size)
            return False
        self._full = False
        self.waiting.append((self.clock.seconds(), encoded))
        self._kick()
        return True

    # -- batching ------------------------------------------------------------------

    def _kick(self):
        """Start the next batch if it is due, else make sure its batch-wait timer runs."""
        if self.in_flight or not self.waiting:
            return
        due_in = self.waiting[0][0] + self.batch_wait - self.clock.seconds()
        if len(self.waiting) >= self.batch_size or due_in <= 0 or self._closing is not None:
            self._cancel_timer()
            self._start_batch()
        elif self._timer is None:
            self._timer = self.clock.callLater(due_in, self._on_timer)

    def _on_timer(self):
        self._timer = None
        self._kick()

    def _cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_batch(self):
        count = min(self.batch_size, len(self.waiting))
        self.in_flight = [self.waiting.popleft()[1] for _ in range(count)]
        d = self._send(batch_body(self.in_flight), count)
        d.addErrback(lambda f: log.failure("webhook: sending a batch failed", f))
        d.addCallback(self._batch_done)

    def _batch_done(self, _):
        if self._abandoned:
            return
        self.in_flight, self._pending = [], None
        self._kick()
        self._maybe_closed()

    # -- sending -------------------------------------------------------------------

    @defer.inlineCallbacks
    def _send(self, body, count):
        delay, retries_left = self.backoff, self.retries
        while True:
            error, retryable = yield self._attempt(body)
            if self._abandoned:
                return
            if error is None:
                self.counters["sent"] += count
                self.counters["batches"] += 1
                return
            self.last_error = error
            if not retryable or retries_left == 0:
                self.counters["failed"] += count
                log.warn("webhook: gave up on {count} events: {error}", count=count, error=error)
                return
            retries_left -= 1
            yield self._sleep(delay)
            if self._abandoned:
                return
            self.counters["retries"] += 1
            delay = min(delay * 2, self.max_backoff)

    def _attempt(self, body):
        """Deferred ``(error text or None, retryable)``; it never fails."""
        d = defer.maybeDeferred(self.post, body)
        d.addTimeout(self.timeout, self.clock, onTimeoutCancel=_timed_out)
        self._pending = d
        return d.addCallbacks(self._judge, self._describe)

    def _sleep(self, seconds):
        d = self._pending = task.deferLater(self.clock, seconds, lambda: None)
        return d.addErrback(lambda f: f.trap(defer.CancelledError))

    @staticmethod
    def _judge(code):
        if 200 <= code < 300:
            return None, False
        return f"HTTP {code}", code >= 500 or code in RETRIED_4XX

    @staticmethod
    def _describe(failure):
        if failure.check(defer.TimeoutError):
            return failure.getErrorMessage(), True
        return f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300], True

    # -- closing -------------------------------------------------------------------

    def close(self, seconds):
        """Stop taking events, send what is held for at most ``seconds``, then drop the rest.

        The Deferred fires (never fails) once nothing is held.
        """
        d = defer.Deferred()
        if self._closing is not None:
            self._closing.append(d)
            self._maybe_closed()
            return d
        self._closing = [d]
        self._cancel_timer()
        if seconds <= 0:
            self._abandon()
        else:
            self._deadline = self.clock.callLater(seconds, self._abandon)
            self._kick()
            self._maybe_closed()
        return d

    def _maybe_closed(self):
        if self._closing and not self.held():
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            waiters, self._closing = self._closing, []
            for d in waiters:
                d.callback(None)

    def _abandon(self):
        """The flush time is over: what is still held is dropped."""
        held = self.held()
        if held:
            self.counters["dropped"] += held
            log.warn("webhook: stopping with {count} events unsent: dropped", count=held)
        self._abandoned = True
        self.waiting.clear()
        self.in_flight = []
        if self._pending is not None:
            self._pending.cancel()
        self._maybe_closed()


def _timed_out(result, timeout):
    """For addTimeout: whatever the cancelled request failed with (twisted.web wraps it), it timed out."""
    raise defer.TimeoutError(f"no answer within {timeout:g} s")
