"""The SQLite store runs the telemetry writes of one group commit together, and when a series has
several points among them writes only what writing them one by one would leave (ingest.py).
Saves made in one reactor turn must leave the telemetry tables exactly as the same saves made one
at a time (each its own commit): every row compared."""

import random
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer

from tbcoap.errors import NotFound
from tbcoap.models import Device
from tbcoap_sqlite import make_store
from tests.test_redis_batching import BASE, DAY, DEVICES, UNKNOWN, outcome, random_saves

TABLES = ("ts_kv", "ts_kv_latest", "ts_kv_series", "ts_kv_rollup", "ts_kv_dirty")


def dump(path, tables=TABLES):
    conn = sqlite3.connect(path)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall() for table in tables}
    finally:
        conn.close()


async def open_pair(tmp_path):
    """Two stores (``together``, ``alone``) with the same two devices; their files' paths."""
    paths = [tmp_path / f"{side}.sqlite3" for side in ("together", "alone")]
    stores = [make_store(f"sqlite://{path}", {}) for path in paths]
    for store in stores:
        await store.open()
        for n, device_id in enumerate(DEVICES):
            await store.add_device(Device(id=device_id, name=f"d{n}"), f"token-{n}")
    return stores, paths


@pytest.mark.parametrize("seed", range(6))
@pytest_twisted.ensureDeferred
async def test_saves_of_one_commit_leave_what_one_at_a_time_leaves(tmp_path, seed):
    rng = random.Random(seed)
    earlier = random_saves(rng, 15, {"a": (-1, 2), "b": (-1, 2), "c": (-1, 2)})
    saves = [save for save in random_saves(rng, 60, {"a": (-1, 4), "b": (-1, 4), "c": (3, 4)})
             if save[0] != UNKNOWN]  # (a save of an unknown device makes the batch run save by save)
    stores, paths = await open_pair(tmp_path)
    try:
        for store in stores:
            for device, entries, ttl in earlier:
                await outcome(store.save_telemetry(device, entries, ttl))
            await store.rollup_telemetry(BASE + 9 * DAY, 1000)
        commits = stores[0].stats()["commits"]
        together = await defer.gatherResults(
            [defer.ensureDeferred(outcome(stores[0].save_telemetry(*save))) for save in saves])
        assert stores[0].stats()["commits"] == commits + 1  # the saves of the turn in one transaction
        alone = [await outcome(stores[1].save_telemetry(*save)) for save in saves]
        assert together == alone == ["OK"] * len(saves)
    finally:
        for store in stores:
            await store.close()
    first, second = dump(paths[0]), dump(paths[1])
    assert len(first["ts_kv"]) > 50 and first["ts_kv_latest"]
    assert first == second


@pytest.mark.parametrize("seed", range(3))
@pytest_twisted.ensureDeferred
async def test_attribute_saves_of_one_commit_leave_what_one_at_a_time_leaves(tmp_path, seed):
    rng = random.Random(seed)
    saves = [(rng.choice(DEVICES), rng.choice(["CLIENT_SCOPE", "SERVER_SCOPE", "SHARED_SCOPE"]),
              {rng.choice("abc"): rng.choice([rng.randint(-9, 9), "s", True, 0.5]) for _ in range(rng.randint(1, 3))},
              BASE + rng.randint(0, 3)) for _ in range(40)]
    stores, paths = await open_pair(tmp_path)
    try:
        commits = stores[0].stats()["commits"]
        await defer.gatherResults([stores[0].save_attributes(*save) for save in saves])
        assert stores[0].stats()["commits"] == commits + 1
        for save in saves:
            await stores[1].save_attributes(*save)
        with pytest.raises(NotFound):  # an unknown device's write fails alone, its neighbours are kept
            await defer.gatherResults([stores[0].save_attributes(UNKNOWN, "SERVER_SCOPE", {"a": 1}, BASE),
                                       stores[0].save_attributes(DEVICES[0], "SERVER_SCOPE", {"z": 1}, BASE)],
                                      consumeErrors=True).addErrback(lambda f: f.value.subFailure.raiseException())
        assert (await stores[0].get_attributes(DEVICES[0], "SERVER_SCOPE", ["z"])) == {"z": (1, BASE)}
        await stores[1].save_attributes(DEVICES[0], "SERVER_SCOPE", {"z": 1}, BASE)
    finally:
        for store in stores:
            await store.close()
    first, second = dump(paths[0], ["attributes"]), dump(paths[1], ["attributes"])
    assert len(first["attributes"]) > 10
    assert first == second
