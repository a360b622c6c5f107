"""Reads whose cost grows with the stored data (raw history, aggregation): bounded in total and
read in chunks, through a gate that is fair between callers.

- One answer holds at most MAX_ANSWER_POINTS points (or buckets) across all its keys; a request
  that could hold more is refused before anything is read.
- A ``HistoryRead`` asks the store for one chunk at a time (CHUNK_POINTS points of one key, or
  CHUNK_BUCKETS buckets of one key), so no store call and no piece of the answer is large, and the
  reactor serves devices between chunks.
- The ``HistoryGate`` lets RUNNING chunk reads run at once on the node, at most one per caller
  (an API key), taking turns between callers; a caller may keep at most STREAMS_PER_CALLER answers
  open and the node MAX_STREAMS; more are refused (503), so one customer cannot shut others out.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer

from tbcoap.errors import BadRequest, StoreUnavailable

MAX_ANSWER_POINTS = 100_000
MAX_LIMIT = 100_000  # ``limit`` per key (ThingsBoard's own cap)
MAX_BUCKETS = 100_000  # buckets in the range of one aggregation
CHUNK_POINTS = 10_000
CHUNK_BUCKETS = 10_000
RUNNING = 2
STREAMS_PER_CALLER = 4
MAX_STREAMS = 64


class HistoryGate:
    """Fair turns at the store for long reads: callers take turns, one running read each."""

    def __init__(self, running=RUNNING, streams_per_caller=STREAMS_PER_CALLER, max_streams=MAX_STREAMS):
        self.running_cap, self.streams_per_caller, self.max_streams = running, streams_per_caller, max_streams
        self.streams = {}        # caller -> open answers
        self.open = 0
        self.running = set()     # callers with a read at the store now
        self.waiting = {}        # caller -> deque of (read, args, Deferred)
        self.served = {}         # caller -> when it last had a turn (a counter); kept while it has answers open
        self.turns = 0
        self.refused = 0

    def admit(self, caller):
        """Count one more open answer for ``caller``; StoreUnavailable (503) when it or the node has
        as many as it may.  ``release(caller)`` when the answer is done."""
        mine = self.streams.get(caller, 0)
        if mine >= self.streams_per_caller or self.open >= self.max_streams:
            self.refused += 1
            whose = "this key's" if mine >= self.streams_per_caller else "the node's"
            raise StoreUnavailable(f"{whose} history reads are all in use; retry when one is done")
        self.streams[caller] = mine + 1
        self.open += 1

    def release(self, caller):
        left = self.streams[caller] - 1
        if left:
            self.streams[caller] = left
        else:
            del self.streams[caller]
            self.served.pop(caller, None)
        self.open -= 1

    def read(self, caller, read, *args):
        """Deferred result of ``read(*args)`` (a Deferred-returning store call), run in ``caller``'s turn."""
        done = defer.Deferred()
        self.waiting.setdefault(caller, deque()).append((read, args, done))
        self._next()
        return done

    def _next(self):
        """Start reads while there is room: the waiting caller served longest ago goes first (a scan
        of at most MAX_STREAMS callers)."""
        while len(self.running) < self.running_cap:
            ready = [c for c in self.waiting if c not in self.running]
            if not ready:
                return
            caller = min(ready, key=lambda c: self.served.get(c, -1))
            queue = self.waiting[caller]
            read, args, done = queue.popleft()
            if not queue:
                del self.waiting[caller]
            self.turns += 1
            self.served[caller] = self.turns
            self.running.add(caller)
            d = defer.maybeDeferred(read, *args)
            d.addBoth(self._finished, caller, done)

    def _finished(self, result, caller, done):
        self.running.discard(caller)
        self._next()
        done.callback(result)  # a Failure goes to done's errbacks

    def stats(self):
        return {"openAnswers": self.open, "runningReads": len(self.running),
                "waitingCallers": len(self.waiting), "refused": self.refused}


class HistoryRead:
    """One history or aggregation answer, read a chunk at a time: ``next()`` fires with
    ``(key, points, last_of_key)`` (the points of one key in the order asked; a key without points
    gives only an empty last chunk), or None when the answer is complete.  ``close()`` once done
    (also early: the client went away)."""

    def __init__(self, gate, caller, store, device_id, keys, start_ts, end_ts, limit, descending, agg=None,
                 interval=None):
        self.gate, self.caller, self.store, self.device_id = gate, caller, store, device_id
        self.keys = deque(keys)
        self.start_ts, self.end_ts, self.limit, self.descending = start_ts, end_ts, limit, descending
        self.agg, self.interval = agg, interval
        self.closed = False
        self._key = None
        gate.admit(caller)

    @defer.inlineCallbacks
    def next(self):
        """The next chunk ``(key, points, last_of_key)``, or None at the end."""
        while True:
            if self.closed:
                return None
            if self._key is None:
                if not self.keys:
                    self.close()
                    return None
                self._key, self._left = self.keys.popleft(), self.limit
                self._low, self._high = self.start_ts, self.end_ts
                if self.agg is not None and self._low >= self._high:  # an empty range: no buckets
                    self._key = None
                    continue
            key = self._key
            points = yield self.gate.read(self.caller, self._chunk)
            if self.closed:
                return None
            last = self._advance(points)
            if last:
                self._key = None
            if points or last:
                return key, points, last

    def _chunk(self):
        """The store call for the current key's next chunk, within [low, high]."""
        key = self._key
        if self.agg is None:
            self._asked = min(self._left, CHUNK_POINTS)
            return self.store.telemetry_history(self.device_id, [key], self._low, self._high, self._asked,
                                                self.descending).addCallback(lambda found: found.get(key, []))
        low, high = self._bucket_window()
        return self.store.telemetry_aggregate(self.device_id, [key], low, high, self.interval, self.agg,
                                              self._left, self.descending).addCallback(lambda found: found.get(key, []))

    def _bucket_window(self):
        """The next CHUNK_BUCKETS buckets (aligned on the request's buckets) in the order asked."""
        span = CHUNK_BUCKETS * self.interval
        if not self.descending:
            return self._low, min(self._high, self._low + span)
        buckets_left = -(-(self._high - self._low) // self.interval)
        first_bucket = max(0, buckets_left - CHUNK_BUCKETS)
        return self._low + first_bucket * self.interval, self._high

    def _advance(self, points):
        """Move past ``points``; True when the current key is done."""
        self._left -= len(points)
        if self.agg is None:
            if self._left <= 0 or len(points) < self._asked:
                return True
            if self.descending:
                self._high = points[-1][0] - 1
            else:
                self._low = points[-1][0] + 1
            return self._low > self._high
        low, high = self._bucket_window()
        if self.descending:
            self._high = low
        else:
            self._low = high
        return self._left <= 0 or self._low >= self._high

    def close(self):
        if not self.closed:
            self.closed = True
            self.gate.release(self.caller)


def check_history(keys, start_ts, end_ts, limit):
    """The arguments of a raw history read (``keys`` the list that will be read)."""
    if not 0 < limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be 1 to {MAX_LIMIT}")
    if start_ts > end_ts:
        raise BadRequest("startTs is after endTs")
    _check_total(len(keys) * limit, "limit")


def check_aggregate(keys, start_ts, end_ts, interval, limit):
    """The arguments of an aggregation (``keys`` the list that will be read)."""
    if start_ts > end_ts:
        raise BadRequest("startTs is after endTs")
    if interval < 1:
        raise BadRequest("interval must be at least 1 ms")
    buckets = -(-(end_ts - start_ts) // interval)
    if buckets > MAX_BUCKETS:
        raise BadRequest(f"at most {MAX_BUCKETS} buckets: make the interval longer or the range shorter")
    if not 0 < limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be 1 to {MAX_LIMIT}")
    _check_total(len(keys) * min(buckets, limit), "limit or the number of buckets")


def _check_total(points, what):
    if points > MAX_ANSWER_POINTS:
        raise BadRequest(f"this could answer {points:,} points; at most {MAX_ANSWER_POINTS:,} per answer across "
                         f"all keys: ask fewer keys or a smaller {what}")
