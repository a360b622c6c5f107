"""Rollups: what every store shares to aggregate a long range without reading every point
(public, for store plugins).

A store keeps, per series, *rollup rows*: for each bucket of a fixed resolution (RESOLUTIONS,
aligned on the epoch) the ``State`` of the points in it.  A series' *watermark* ``rolled`` (a day
boundary) says the rows below it are complete, except for the *dirty days* listed apart (a day
whose points changed by a delete or an expiry, recomputed by the next rollup pass).  Points at or
above the watermark are read raw; a late point below it moves the watermark back to its day.

An aggregation is planned here (``plan``): each answer bucket, cut where the rollups stop being
true, is covered by the coarsest rows that fit entirely inside it and raw points at its unaligned
edges.  The store reads each part with one query per resolution (a list of ranges) and one for the
raw points, each grouped by answer bucket, and ``merge`` adds them up; ``finish`` gives the value
ThingsBoard's aggregation asks for.  Because every part is a count, a sum, a minimum or a
maximum of disjoint sets of points, the answer is the one the raw points give (sums of doubles
may differ in the last bits, being added in another order).
"""

from __future__ import annotations

MINUTE = 60_000
TEN_MINUTES = 600_000
HOUR = 3_600_000
DAY = 86_400_000
RESOLUTIONS = (DAY, HOUR, TEN_MINUTES, MINUTE)  # coarsest first
MAX_PLANNED_BUCKETS = 20_000  # more answer buckets in one store call: the raw aggregation instead

# a bucket's state: point count (every kind), LONG count, DOUBLE count, LONG sum, DOUBLE sum,
# LONG min, LONG max, DOUBLE min, DOUBLE max (None where there is no such value)
N, NL, ND, SL, SD, MINL, MAXL, MIND, MAXD = range(9)


FIRST_DAY = -(2**63 // DAY) * DAY  # the first day start in 64 bits: rollups begin there (before it: raw)
LAST_DAY = (2**63 - 1) // DAY * DAY


def floor_day(ts):
    """The start of ``ts``'s day, FIRST_DAY at the least."""
    return max(ts - ts % DAY, FIRST_DAY)


def ceil_day(ts):
    return min(-(-ts // DAY) * DAY, LAST_DAY)


def usable(start_ts, end_ts, interval):
    """True when rollups can serve this aggregation: buckets of at least a minute, not too many."""
    return interval >= MINUTE and start_ts < end_ts and -(-(end_ts - start_ts) // interval) <= MAX_PLANNED_BUCKETS


def plan(start_ts, end_ts, interval, rolled, dirty=(), first_day=FIRST_DAY):
    """``(raw, rows)`` for an aggregation of one series: ``raw`` the ranges ``[lo, hi)`` to read
    raw, ``rows`` ``{resolution: [(lo, hi), ...]}`` the ranges of rollup rows (by their bucket's
    start) to read.  ``rolled`` is the series' watermark, ``dirty`` its dirty days (day starts).
    Together the ranges cover ``[start_ts, end_ts)`` once; every rollup row read lies inside one
    answer bucket.  Ranges are sorted and contiguous ones merged."""
    raw, rows = [], {r: [] for r in RESOLUTIONS}

    def add(out, lo, hi):
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))

    def cover(a, b, level):
        while level < len(RESOLUTIONS):
            r = RESOLUTIONS[level]
            lo, hi = -(-a // r) * r, b // r * r
            if lo < hi:
                if a < lo:
                    cover(a, lo, level + 1)
                add(rows[r], lo, hi)
                if hi < b:
                    cover(hi, b, level + 1)
                return
            level += 1
        add(raw, a, b)

    top = min(end_ts, rolled)
    segments, at = [], start_ts  # where rollups are true: below the watermark, outside dirty days
    if start_ts < first_day:
        segments.append((start_ts, min(first_day, end_ts), False))
        at = min(first_day, end_ts)
    for day in sorted(d for d in dirty if d + DAY > start_ts and d < top):
        if at < day:
            segments.append((at, day, True))
        segments.append((max(at, day), min(day + DAY, top), False))
        at = min(day + DAY, top)
    if at < top:
        segments.append((at, top, True))
    if max(start_ts, top) < end_ts:
        segments.append((max(start_ts, top), end_ts, False))
    for lo, hi, true in segments:
        if not true:
            add(raw, lo, hi)
            continue
        k = (lo - start_ts) // interval
        while True:
            b0 = start_ts + k * interval
            if b0 >= hi:
                break
            cover(max(lo, b0), min(hi, b0 + interval), 0)
            k += 1
    return raw, {r: ranges for r, ranges in rows.items() if ranges}


def merge(states, found):
    """Add the rows ``found`` (``(k, *state)``, each a part of answer bucket ``k``) into ``states``
    (``{k: list state}``)."""
    for k, *state in found:
        if not state[N]:
            continue
        have = states.get(k)
        if have is None:
            states[k] = [state[N], state[NL], state[ND], state[SL], state[SD], *state[MINL:]]
            continue
        have[N] += state[N]
        have[NL] += state[NL]
        have[ND] += state[ND]
        for i in (SL, SD):
            if state[i] is not None:
                have[i] = state[i] if have[i] is None else have[i] + state[i]
        for i, pick in ((MINL, min), (MAXL, max), (MIND, min), (MAXD, max)):
            if state[i] is not None:
                have[i] = state[i] if have[i] is None else pick(have[i], state[i])


def finish(agg, state):
    """The value of one bucket, or None when the bucket has nothing to aggregate (no numbers for
    AVG, MIN, MAX, SUM)."""
    if agg == "COUNT":
        return state[N]
    if not state[NL] and not state[ND]:
        return None
    sl = state[SL] or 0
    sd = state[SD] or 0.0
    if agg == "AVG":
        return (float(sl) + sd) / (state[NL] + state[ND])
    if agg == "SUM":
        return float(sl) + sd if state[ND] else sl
    i, j, pick = (MINL, MIND, min) if agg == "MIN" else (MAXL, MAXD, max)
    return pick(v for v in (state[i], state[j]) if v is not None)


def windows(start_ts, end_ts, interval, limit, descending):
    """``(lo, hi, shift)`` of the windows to try in turn, each ``[lo, hi)`` on bucket boundaries: the first
    (descending: the last) ``limit`` bucket slots, then four times as many, ..., then the whole range
    (a few buckets of a long range need not read it all).  ``shift`` is the number of the window's
    first bucket, ``hi`` the window's end; read each with ``lo`` as the buckets' origin and add
    ``shift`` to the buckets found."""
    slots = -(-(end_ts - start_ts) // interval)
    span = limit
    while span < slots:
        first = slots - span if descending else 0
        yield start_ts + first * interval, start_ts + (first + span) * interval if not descending else end_ts, first
        span *= 4
    yield start_ts, end_ts, 0


def shifted(states, shift):
    return {k + shift: state for k, state in states.items()} if shift else states


def windowed(read, agg, start_ts, end_ts, interval, limit, descending, bucket_ts):
    """The answer (``answer``) of one series through ``read(lo, hi)`` (its states with ``lo`` as
    the buckets' origin, or None: read it raw), window after window (``windows``); None when
    ``read`` said so."""
    for lo, hi, shift in windows(start_ts, end_ts, interval, limit, descending):
        states = read(lo, hi)
        if states is None:
            return None
        found = answer(agg, shifted(states, shift), start_ts, end_ts, interval, limit, descending, bucket_ts)
        if len(found) >= limit:
            break
    return found


def answer(agg, states, start_ts, end_ts, interval, limit, descending, bucket_ts):
    """``[(ts, value)]``: the first ``limit`` buckets that hold values, in the order asked."""
    out = []
    for k in sorted(states, reverse=descending):
        value = finish(agg, states[k])
        if value is not None:
            out.append((bucket_ts(start_ts, end_ts, interval, k), value))
            if len(out) >= limit:
                break
    return out


def sums_fit(states, bits=64):
    """False when a LONG sum does not fit in ``bits`` bits (where the store's raw aggregation turns
    to floats or fails: the store answers that one with it)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return all(s[SL] is None or (isinstance(s[SL], int) and low <= s[SL] <= high) for s in states.values())
