"""rollupkit.plan: the ranges it plans cover the range once, and every rollup row lies in one bucket."""

from hypothesis import given, settings, strategies as st

from tbcoap.rollupkit import DAY, FIRST_DAY, HOUR, MINUTE, RESOLUTIONS, plan, windows

BASE = 1_700_000_000_000 - 1_700_000_000_000 % DAY


@settings(max_examples=300, deadline=None)
@given(st.integers(BASE - 2 * DAY, BASE + 2 * DAY), st.integers(1, 6 * DAY),
       st.one_of(st.sampled_from([MINUTE, HOUR, DAY]), st.integers(MINUTE, 2 * DAY)),
       st.integers(-3, 6), st.sets(st.integers(-3, 6), max_size=4))
def test_a_plan_covers_the_range_once_with_rows_inside_buckets(start, length, interval, rolled_day, dirty_days):
    end = start + length
    rolled = BASE + rolled_day * DAY
    dirty = [BASE + d * DAY for d in dirty_days]
    raw, rows = plan(start, end, interval, rolled, dirty)
    pieces = [(lo, hi, None) for lo, hi in raw] + [(lo, hi, r) for r, found in rows.items() for lo, hi in found]
    pieces.sort()
    at = start
    for lo, hi, res in pieces:
        assert lo == at and lo < hi  # contiguous, no overlap, nothing left out
        at = hi
        if res is None:
            continue
        assert res in RESOLUTIONS and lo % res == 0 and hi % res == 0 and hi <= rolled
        assert not any(d < hi and lo < d + DAY for d in dirty)  # no row of a dirty day
        for bucket in range(lo, hi, res):  # each row inside one answer bucket
            assert (bucket - start) // interval == (bucket + res - 1 - start) // interval
    assert at == end


def test_rows_serve_aligned_buckets_and_raw_points_only_the_edges():
    raw, rows = plan(BASE, BASE + 365 * DAY, HOUR, BASE + 365 * DAY)
    assert raw == [] and rows == {HOUR: [(BASE, BASE + 365 * DAY)]}
    raw, rows = plan(BASE + 12_345, BASE + 2 * DAY, HOUR, BASE + DAY)
    assert raw[0] == (BASE + 12_345, BASE + MINUTE) and raw[-1] == (BASE + DAY, BASE + 2 * DAY)  # above the watermark
    assert plan(FIRST_DAY - 5, FIRST_DAY + 5, MINUTE, FIRST_DAY + DAY) == ([(FIRST_DAY - 5, FIRST_DAY + 5)], {})


def test_windows_grow_by_four_from_the_end_asked():
    assert list(windows(0, 100, 1, 10, False)) == [(0, 10, 0), (0, 40, 0), (0, 100, 0)]
    assert list(windows(0, 100, 1, 10, True)) == [(90, 100, 90), (60, 100, 60), (0, 100, 0)]
