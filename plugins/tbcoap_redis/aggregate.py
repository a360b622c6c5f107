"""Aggregated history in Redis: the aggregate script (lua/aggregate.lua) reads a series in bounded
chunks, and the partial buckets of each chunk are merged here, so no call holds Redis for long."""

from __future__ import annotations

from tbcoap.models import from_kind
from tbcoap.storekit import bucket_ts

CHUNK = 10_000  # points one script call reads at most (a few ms of Redis time)
KINDS = {"L": "LONG", "D": "DOUBLE"}


def number(text):
    """A stored LONG or DOUBLE (``L..``/``D..``) as int or float; None for ''."""
    return from_kind(KINDS[text[0]], text[1:]) if text else None


class Buckets:
    """The buckets of one series, merged from chunk answers ``k, n, sum, min, max, ...``."""

    def __init__(self, agg):
        self.agg = agg
        self.states = {}  # bucket number -> [count, sum, min, max]

    def add(self, flat):
        for i in range(0, len(flat), 5):
            k, n, total, low, high = int(flat[i]), int(flat[i + 1]), *map(number, flat[i + 2:i + 5])
            state = self.states.get(k)
            if state is None:
                self.states[k] = [n, total, low, high]
                continue
            state[0] += n
            if total is not None:
                state[1] = total if state[1] is None else state[1] + total
            if low is not None and (state[2] is None or low < state[2]):
                state[2] = low
            if high is not None and (state[3] is None or high > state[3]):
                state[3] = high

    def complete(self, limit) -> bool:
        """True once the first ``limit`` buckets in reading order can no longer change."""
        return len(self.states) > limit

    def points(self, start_ts, end_ts, interval, limit, descending):
        """``[(bucket ts, value)]`` of the first ``limit`` buckets in the order asked."""
        chosen = sorted(self.states, reverse=descending)[:limit]
        return [(bucket_ts(start_ts, end_ts, interval, k), self.value(self.states[k])) for k in chosen]

    def value(self, state):
        n, total, low, high = state
        if self.agg == "COUNT":
            return n
        if self.agg == "AVG":
            return float(total) / n
        return {"SUM": total, "MIN": low, "MAX": high}[self.agg]
