"""Rate limits: 4.29 with Max-Age, --device/--peer-rate-limit N:S[,N:S], bounded memory:
the RateLimiter on its own, with explicit clock values, no network."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbcoap.ratelimit import EXACT_MAX, SLOTS, RateLimiter, parse_rate_limit

BIG = EXACT_MAX + 4  # a count above EXACT_MAX: the sub-window mode


def test_parse_rate_limit():
    assert parse_rate_limit("100:1,3000:60") == [(100, 1), (3000, 60)]
    for bad in ("", "100", "0:1", "1:0", "a:1", "1:-1"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)


def test_bad_limits():
    for limits in ([], [(0, 1)], [(1, 0)]):
        with pytest.raises(ValueError):
            RateLimiter(limits)


def test_exact_up_to_n_then_refused_with_wait():
    rl = RateLimiter([(3, 10)])
    assert [rl.check("k", t) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    assert rl.check("k", 3) == pytest.approx(7)  # the request at 0 leaves the window at 10
    assert rl.check("k", 9.5) == pytest.approx(0.5)
    assert rl.check("k", 10) == 0.0
    assert rl.check("k", 10.5) == pytest.approx(0.5)  # now the one at 1 is the oldest
    assert rl.stats() == {"keys": 1, "evictions": 0, "refused": 3}


def test_subwindow_up_to_n_then_refused_with_wait():
    rl = RateLimiter([(BIG, 10)])  # sub-windows of 1 s
    assert all(rl.check("k", 0.5) == 0.0 for _ in range(BIG))
    wait = rl.check("k", 5)
    assert wait == pytest.approx(6)  # sub-window [0, 1) leaves when [11, 12) begins
    assert 0 < wait <= 10 + 10 / SLOTS
    assert rl.check("k", 10.9) > 0
    assert rl.check("k", 11) == 0.0


@pytest.mark.parametrize("n", [3, BIG])
def test_refill_over_time_and_max_age(n):
    rl = RateLimiter([(n, 2)])
    now, allowed = 0.0, 0
    while now < 100:  # a client sending every 50 ms, backing off by Max-Age when told
        wait = rl.check("k", now)
        if wait:
            now += max(1, math.ceil(wait))  # what the caller puts in Max-Age
            assert rl.check("k", now) == 0.0  # and after it the client gets through
            allowed += 1
        else:
            allowed += 1
        now += 0.05
    assert 100 / (2 + 1 + 2 / SLOTS) * n * 0.9 < allowed <= (100 / 2 + 1) * n


@pytest.mark.parametrize("n", [2, BIG])
def test_multiple_pairs(n):
    rl = RateLimiter([(n, 1), (3 * n, 10)])  # like 100:1,3000:60
    for burst in range(3):  # bursts 1.2 s apart: beyond the short window even in sub-windows
        now = burst * 1.2
        assert all(rl.check("k", now) == 0.0 for _ in range(n))
        wait = rl.check("k", now)
        assert 0 < wait <= 1 + 1 / SLOTS if burst < 2 else wait > 6  # short, then long pair
    wait = rl.check("k", 3.6)  # the long pair refuses: 3n in the last 10 s
    assert 6 < wait <= 10 + 10 / SLOTS
    assert rl.check("k", 3.6 + math.ceil(wait)) == 0.0


@pytest.mark.parametrize("n", [1, BIG])
def test_refused_requests_do_not_consume(n):
    rl = RateLimiter([(n, 5)])
    assert all(rl.check("k", 0) == 0.0 for _ in range(n))
    for i in range(1, 1000):  # a client hammering while refused
        assert rl.check("k", i * 0.004) > 0
    assert rl.check("k", 5 + 5 / SLOTS) == 0.0
    assert rl.stats()["refused"] == 999


def test_independent_keys():
    rl = RateLimiter([(2, 10)])
    assert rl.check(("10.0.0.1", 5683), 0) == rl.check(("10.0.0.1", 5683), 0) == 0.0
    assert rl.check(("10.0.0.1", 5683), 0) > 0
    assert rl.check(("10.0.0.1", 5684), 0) == 0.0  # another port is another peer
    assert rl.check("token", 0) == 0.0
    assert rl.stats()["keys"] == 3


def test_eviction_lru_and_bounded():
    rl = RateLimiter([(1, 60)], max_keys=3)
    for key in "abc":
        rl.check(key, 0)
    assert rl.check("a", 1) > 0  # "a" is now the most recently used
    rl.check("d", 2)
    assert set(rl._keys) == {"a", "c", "d"} and rl.evictions == 1  # "b" was the LRU
    for i in range(10_000):
        rl.check(i, 3)
        assert len(rl) <= 3
    assert rl.stats() == {"keys": 3, "evictions": 10_001, "refused": 1}


def test_idle_keys_dropped_without_eviction():
    rl = RateLimiter([(1, 1), (BIG, 10)], max_keys=5)
    for i in range(5):
        rl.check(i, 0)
    for i in range(5, 10):  # the first five have been idle longer than every window
        rl.check(i, 100)
    assert len(rl) == 5 and rl.evictions == 0
    rl.check("refused only", 100)
    assert rl.evictions == 1


def test_memory_independent_of_history():
    rl = RateLimiter([(BIG, 1), (3, 60)], max_keys=1000)
    size = len(rl._fresh)
    for i in range(50_000):
        rl.check(i % 5000, i * 0.001)
    assert len(rl) <= 1000
    assert all(len(state) == size for state in rl._keys.values())


limits_st = st.lists(
    st.tuples(st.integers(1, 2 * EXACT_MAX + 8), st.integers(1, 5)), min_size=1, max_size=3
)


@settings(max_examples=300, deadline=None)
@given(limits=limits_st, gaps=st.lists(st.integers(0, 700), min_size=1, max_size=400))
def test_never_more_than_n_in_any_window(limits, gaps):
    """Times on a 1 ms grid. For every pair: at most N allowed in any [t, t + S); a request
    is refused only if some pair had N allowed in the last S (exact) or S + S/SLOTS seconds."""
    rl = RateLimiter(limits)
    allowed, t = [], 0
    for gap in gaps:
        t += gap
        wait = rl.check("k", t / 1000)
        if wait == 0.0:
            allowed.append(t)
            continue
        span = lambda n, s: s * 1000 + (0 if n <= EXACT_MAX else s * 1000 // SLOTS)
        recent = [
            sum(1 for a in allowed if t - a <= span(n, s)) for n, s in limits
        ]
        assert any(r >= n for r, (n, _) in zip(recent, limits))
        assert 0 < wait <= max(span(n, s) for n, s in limits) / 1000
    for n, s in limits:
        for i, start in enumerate(allowed):  # the densest window starts at an allowed request
            inside = sum(1 for a in allowed[i:i + n + 1] if a < start + s * 1000)
            assert inside <= n
