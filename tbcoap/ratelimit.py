"""Rate-limit specifications in ThingsBoard's form ``N:S[,N:S]`` and a limiter enforcing them."""

import math
from collections import OrderedDict


def parse_rate_limit(spec: str) -> list[tuple[int, int]]:
    """``"100:1,3000:60"`` -> ``[(100, 1), (3000, 60)]``: at most N requests in S seconds."""
    limits = []
    for part in spec.split(","):
        count, sep, seconds = part.strip().partition(":")
        if not sep or not count.isdigit() or not seconds.isdigit() or int(count) < 1 or int(seconds) < 1:
            raise ValueError(f"expected N:S[,N:S] with positive integers, got {spec!r}")
        limits.append((int(count), int(seconds)))
    return limits


def parse_counts(spec: str, size: int) -> tuple[int, ...] | None:
    """``"50,100,1000"`` -> ``(50, 100, 1000)``: ``size`` positive integers; None for ``off``."""
    if spec.strip().lower() == "off":
        return None
    parts = [part.strip() for part in spec.split(",")]
    if len(parts) != size or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"expected {size} positive integers separated by commas (or off), got {spec!r}")
    return tuple(int(part) for part in parts)


EXACT_MAX = 16  # up to this N a pair keeps the times of the last N allowed requests (exact)
SLOTS = 10  # above it, counts in SLOTS + 1 sub-windows of S / SLOTS (exact to S / SLOTS)


class RateLimiter:
    """At most N allowed requests per key in any window of S seconds, for every (N, S) pair.

    Strict sliding windows, not token buckets: a bucket of capacity N refilling N per S (bucket4j's
    greedy refill, as ThingsBoard uses) lets nearly 2N through in S seconds (the full bucket, then
    the refill), which breaks "at most N in S". A pair with N <= EXACT_MAX keeps a ring of the last
    N allowed times: a request is allowed when the oldest is at least S old (exact). A larger pair
    counts allowed requests in SLOTS + 1 sub-windows of width S/SLOTS, the current one and the
    SLOTS before it; it refuses only when N were allowed in the last S + S/SLOTS seconds.

    Refused requests consume nothing. State per key is one flat list, no objects per request and
    no timers. Keys are kept in LRU order, at most ``max_keys``: a new key first drops idle keys
    (nothing allowed within the longest window, so dropping loses nothing) from the LRU end, then
    evicts the least recently used one if still full, counted in ``evictions``.
    """

    def __init__(self, limits, max_keys=100_000):
        if not limits or max_keys < 1:
            raise ValueError("need at least one (count, seconds) pair and max_keys >= 1")
        self.max_keys = max_keys
        self.evictions = self.refused = 0
        self._keys = OrderedDict()
        self._plan = []  # (offset, N, S, slot width or None when exact)
        fresh = [-math.inf]  # [0]: time of the last allowed request
        self._idle = 0.0  # after this long without an allowed request a key holds no state
        for n, s in limits:
            n, s, off = int(n), float(s), len(fresh)
            if n < 1 or s <= 0:
                raise ValueError(f"bad rate limit {n}:{s}")
            if n <= EXACT_MAX:  # [head index, N times, oldest at head]
                fresh += [off + 1] + [-math.inf] * n
                self._plan.append((off, n, s, None))
                self._idle = max(self._idle, s)
            else:  # [current slot, total, SLOTS + 1 counts]
                w = s / SLOTS
                while w * SLOTS < s:  # the SLOTS whole sub-windows must cover S
                    w = math.nextafter(w, math.inf)
                fresh += [-math.inf, 0] + [0] * (SLOTS + 1)
                self._plan.append((off, n, s, w))
                self._idle = max(self._idle, s + w)
        self._fresh = fresh

    def check(self, key, now: float) -> float:
        """Count a request of ``key`` at ``now``: 0.0 if allowed, else seconds to wait (> 0)."""
        wait = self.wait(key, now)
        if wait:
            self.refuse()
        else:
            self.take(key, now)
        return wait

    def refuse(self):
        """Count a request refused after ``wait`` (by this limiter or, with several, another)."""
        self.refused += 1

    def wait(self, key, now: float) -> float:
        """Seconds until ``key`` may make a request (0.0: now), counting nothing.

        With several limiters, ask each ``wait`` first and ``take`` from all only
        when none refuses, so that a refused request uses up nothing anywhere.
        """
        st = self._state(key, now)
        wait = 0.0
        for off, n, s, w in self._plan:
            if w is None:
                oldest = st[st[off]]
                if now - oldest < s:  # (at most s: float rounding could make it an ulp more)
                    wait = max(wait, min(s, oldest + s - now), 1e-9)
                continue
            c, cur = int(now // w), st[off]
            if c > cur:  # slide: empty the sub-windows that left the window
                if c - cur > SLOTS:
                    st[off + 1:off + SLOTS + 3] = self._fresh[off + 1:off + SLOTS + 3]
                else:
                    total = st[off + 1]
                    for j in range(cur + 1, c + 1):
                        i = off + 2 + j % (SLOTS + 1)
                        total -= st[i]
                        st[i] = 0
                    st[off + 1] = total
                st[off] = cur = c
            if st[off + 1] >= n:  # wait until enough of the oldest sub-windows leave
                need, j = st[off + 1] - n + 1, cur - SLOTS
                while True:
                    need -= st[off + 2 + j % (SLOTS + 1)]
                    if need <= 0:
                        break
                    j += 1
                wait = max(wait, (j + SLOTS + 1) * w - now, 1e-9)
        return wait

    def take(self, key, now: float):
        """Record an allowed request of ``key`` at ``now`` (after ``wait`` said 0)."""
        st = self._state(key, now)
        st[0] = now
        for off, n, s, w in self._plan:
            if w is None:
                head = st[off]
                st[head] = now
                st[off] = head + 1 if head < off + n else off + 1
            else:
                st[off + 2 + int(now // w) % (SLOTS + 1)] += 1
                st[off + 1] += 1

    def _state(self, key, now):
        st = self._keys.get(key)
        if st is None:
            return self._new(key, now)
        self._keys.move_to_end(key)
        return st

    def _new(self, key, now):
        keys = self._keys
        for _ in range(2):  # cheaply drop idle keys at the LRU end
            if keys and now - keys[next(iter(keys))][0] >= self._idle:
                keys.popitem(last=False)
        if len(keys) >= self.max_keys:
            if now - keys.popitem(last=False)[1][0] < self._idle:
                self.evictions += 1
        st = keys[key] = self._fresh.copy()
        return st

    def __len__(self):
        return len(self._keys)

    def stats(self) -> dict:
        """``{"keys": n, "evictions": n, "refused": n}``."""
        return {"keys": len(self._keys), "evictions": self.evictions, "refused": self.refused}
