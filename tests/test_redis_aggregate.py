"""Aggregated history in the Redis store is read in chunks of bounded size (so one call never
holds Redis for long): with tiny chunks it must give exactly what SQLite's GROUP BY gives."""

import random

import pytest
import pytest_twisted

import tbcoap_redis.store
from tbcoap.models import Device, new_id
from tests.test_store_contract import open_redis, open_sqlite, remove_redis_keys  # noqa: F401  (fixture)


@pytest.mark.parametrize("chunk", [1, 3, 7])
@pytest_twisted.ensureDeferred
async def test_chunked_aggregation_matches_sqlite(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(tbcoap_redis.store, "CHUNK", chunk)
    sqlite, redis = await open_sqlite(tmp_path), await open_redis(tmp_path)
    rng = random.Random(chunk)
    points = [(ts, "t", rng.choice([rng.randint(-50, 50), rng.uniform(-5, 5), "s", True]))
              for ts in sorted(rng.sample(range(0, 400), 120))]
    try:
        ids = []
        for store in (sqlite, redis):
            device = await store.add_device(Device(id=new_id(), name="a", type="default"), "ta")
            await store.save_telemetry(device.id, points)
            ids.append(device.id)
        for agg in ("AVG", "MIN", "MAX", "SUM", "COUNT"):
            for interval, limit, descending in ((40, 100, False), (40, 3, False), (40, 3, True), (1000, 5, True),
                                                (7, 100, True)):
                expected, got = [await store.telemetry_aggregate(i, ["t"], 13, 390, interval, agg, limit, descending)
                                 for store, i in zip((sqlite, redis), ids)]
                assert got.keys() == expected.keys() == {"t"}
                assert [ts for ts, _ in got["t"]] == [ts for ts, _ in expected["t"]], (agg, interval, limit)
                for (_, mine), (_, theirs) in zip(got["t"], expected["t"]):
                    assert type(mine) is type(theirs) and mine == pytest.approx(theirs), (agg, interval, limit)
    finally:
        await sqlite.close()
        await redis.close()
