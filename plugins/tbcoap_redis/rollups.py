"""Rollups of the Redis store (see tbcoap.rollupkit; the keys are described in lua/rollups.lua).
Saves only move a watermark back, or put a series that reached a new day in 'rolling'; the rollup
pass (lua/rollup_telemetry.lua, driven by the retention service) rolls whole days behind each
watermark up to its newest point's day; an aggregation asks for the watermark and dirty days, plans
here, and reads its ranges a few thousand at a time (lua/rollup_read.lua) so no script holds Redis
for long."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.rollupkit import MINUTE, answer, floor_day, merge, plan, shifted, sums_fit, windows
from tbcoap.storekit import bucket_ts, check

FIRST_DAY = -4_503_599_616_000_000  # the first day rolled up (timestamps from -2^52 are exact in Lua)
CALL_BUDGET = 2000  # rows, or minutes of raw points, one script call reads at most (a few ms of Redis)


def _state(text):
    """One answer bucket's reply ``k|n|nl|nd|sl|sd|minl|maxl|mind|maxd`` as ``(k, *state)``; None when
    a LONG sum left 2^53."""
    k, n, nl, nd, sl, sd, minl, maxl, mind, maxd = text.split("|")
    if sl == "X":
        return None
    return (int(k), int(n), int(nl), int(nd), int(sl) if int(nl) else None, float(sd) if int(nd) else None,
            int(minl) if minl else None, int(maxl) if maxl else None, float(mind) if mind else None,
            float(maxd) if maxd else None)


def _calls(ranges):
    """The ranges ``(lo, hi, res or 'raw')`` as the texts of script calls of CALL_BUDGET rows (or
    minutes of raw points) each at most, a long range cut into pieces."""
    texts, parts, used = [], [], 0
    for lo, hi, res in ranges:
        step = CALL_BUDGET * (MINUTE if res == "raw" else res)
        while lo < hi:
            end = min(hi, lo + step - (used * step // CALL_BUDGET) if used else lo + step)
            parts.append(f"{res} {lo} {end}")
            used += max(1, -(-(end - lo) * CALL_BUDGET // step))
            lo = end
            if used >= CALL_BUDGET:
                texts.append(";".join(parts))
                parts, used = [], 0
    if parts:
        texts.append(";".join(parts))
    return texts


class RollupCalls:
    """Mixed into RedisStore (``_read``, ``_write`` are its)."""

    rollups = True  # aggregations use the rollups (False: every point is read, as benchmarks compare)

    def rollup_telemetry(self, now, limit):
        try:
            check(isinstance(now, int) and isinstance(limit, int) and limit >= 1,
                  "now and limit must be integers (limit >= 1)")
        except BadRequest as exc:
            return defer.fail(exc)
        d = self._write("rollup_telemetry", "telemetry", floor_day(now), limit)
        return d.addCallback(lambda reply: (int(reply[0]), bool(int(reply[1]))))

    @defer.inlineCallbacks
    def _rollup_answer(self, device_id, key, start_ts, end_ts, interval, agg, limit, descending):
        """The answer of one series over rollups, window after window (rollupkit.windows), or None
        (read it raw)."""
        for lo, hi, shift in windows(start_ts, end_ts, interval, limit, descending):
            states = yield self._rollup_states(device_id, key, lo, hi, interval)
            if states is None:
                return None
            found = answer(agg, shifted(states, shift), start_ts, end_ts, interval, limit, descending, bucket_ts)
            if len(found) >= limit:
                break
        return found

    @defer.inlineCallbacks
    def _rollup_states(self, device_id, key, start_ts, end_ts, interval):
        """``{k: state}`` of one series, or None (read it raw: no watermark, or sums past 2^53)."""
        reply = yield self._read("rollup_read", device_id, key, start_ts, interval, "plan", end_ts)
        if not reply[0]:
            return None
        raw, rows = plan(start_ts, end_ts, interval, int(reply[0]), [int(d) for d in reply[1:]], FIRST_DAY)
        ranges = sorted([(lo, hi, "raw") for lo, hi in raw] + [(lo, hi, res) for res, found in rows.items()
                                                                for lo, hi in found])  # in time: a chunk's buckets are its own
        states = {}
        for text in _calls(ranges):
            flat = yield self._read("rollup_read", device_id, key, start_ts, interval, "read", text)
            found = [_state(text) for text in flat]
            if None in found:
                return None
            merge(states, found)
        return states if sums_fit(states, 54) else None
