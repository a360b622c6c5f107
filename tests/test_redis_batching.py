"""The Redis store writes the telemetry saves of one reactor turn with one script call, gathered per
series (points of one series with the same ts collapse, the latest value is written once).  Saves
made in one turn must leave Redis exactly as the same saves made one at a time: every telemetry,
expiry, series and rollup key compared under two prefixes."""

import random
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer

from tbcoap.errors import NotFound
from tbcoap.models import Device
from tbcoap_redis import make_store
from tests.conftest import require_redis
from tests.redisutil import Resp

DAY = 86_400_000
BASE = 1_700_000_000_000 - 1_700_000_000_000 % DAY
DEVICES = ("5d7cbd40-0000-4000-8000-000000000001", "5d7cbd40-0000-4000-8000-000000000002")
UNKNOWN = "5d7cbd40-0000-4000-8000-00000000dead"


def random_saves(rng, count, days):
    """``(device, entries, ttl)`` saves with colliding, out-of-order and multi-day timestamps (key
    ``k`` on the days ``days[k]``)."""
    saves = []
    for _ in range(count):
        device = rng.choice(DEVICES + (UNKNOWN,) if rng.random() < 0.1 else DEVICES)
        keys = [rng.choice("abc") for _ in range(rng.randint(1, 4))]
        entries = [(BASE + rng.randint(*days[key]) * DAY + rng.randint(0, 4), key,
                    rng.choice([rng.randint(-9, 9), rng.uniform(-1, 1), "s%d" % rng.randint(0, 3), True]))
                   for key in keys]
        saves.append((device, entries, rng.choice([None, None, 5_000, 60_000])))
    return saves


def dump(client, prefix):
    """Every key under ``prefix`` but the device records, with its whole value."""
    state, cursor = {}, "0"
    while True:
        cursor, keys = client.call("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", 1000)
        for key in keys:
            name = key[len(prefix) + 1:]
            kind = client.call("TYPE", key)
            if kind == "zset":
                state[name] = client.call("ZRANGE", key, 0, -1, "WITHSCORES")
            elif kind == "hash":
                flat = client.call("HGETALL", key)
                state[name] = dict(zip(flat[::2], flat[1::2]))
            elif kind == "set":
                state[name] = sorted(client.call("SMEMBERS", key))
        if cursor == "0":
            break
    return {name: value for name, value in state.items()
            if name.split(":", 1)[0] in {"tsh", "tsl", "series", "expiring", "rolled", "rolling", "tsd", "dirty", "tsr"}}


async def outcome(d):
    try:
        await d
        return "OK"
    except NotFound:
        return "NOTFOUND"


@pytest.mark.parametrize("seed", range(6))
@pytest_twisted.ensureDeferred
async def test_saves_of_one_turn_leave_what_one_at_a_time_leaves(seed):
    url = require_redis()
    rng = random.Random(seed)
    earlier = random_saves(rng, 15, {"a": (-1, 2), "b": (-1, 2), "c": (-1, 2)})
    saves = random_saves(rng, 60, {"a": (-1, 4), "b": (-1, 4), "c": (3, 4)})  # c: only days after its newest
    prefixes = [f"batching-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    stores = [make_store(f"{url}?prefix={prefix}", {}) for prefix in prefixes]
    client = Resp.for_url(url)
    try:
        for store in stores:
            await store.open()
            for n, device_id in enumerate(DEVICES):
                await store.add_device(Device(id=device_id, name=f"d{n}"), f"token-{n}")
            for device, entries, ttl in earlier:  # stored points the saves below write over
                await outcome(store.save_telemetry(device, entries, ttl))
            await store.rollup_telemetry(BASE + 9 * DAY, 1000)  # every series rolled: later days make them roll again
        calls = []
        real_eval = stores[0]._eval
        stores[0]._eval = lambda name, *args: calls.append(name) or real_eval(name, *args)
        together = await defer.gatherResults(
            [defer.ensureDeferred(outcome(stores[0].save_telemetry(*save))) for save in saves])
        assert calls == ["save_telemetry"]  # the saves of the turn went in one script call
        alone = [await outcome(stores[1].save_telemetry(*save)) for save in saves]
        assert together == alone == ["NOTFOUND" if save[0] == UNKNOWN else "OK" for save in saves]
        first, second = dump(client, prefixes[0]), dump(client, prefixes[1])
        assert any(name.startswith("tsh:") for name in first) and "expiring" in first and "rolled" in first
        assert first == second
        # a series with points of a day past its rollup watermark is waiting for the rollup pass
        rolled, rolling = first["rolled"], set(first.get("rolling", [])[::2])
        latest = {f"{name.split(':', 1)[1]}\0{key}": int(member.split("|", 1)[0])
                  for name, values in first.items() if name.startswith("tsl:") for key, member in values.items()}
        behind = [series for series, watermark in rolled.items()
                  if latest[series] - latest[series] % DAY > int(float(watermark))]
        assert behind and set(behind) <= rolling
    finally:
        for store in stores:
            await store.close()
        for prefix in prefixes:
            client.delete_prefix(prefix)
        client.close()
