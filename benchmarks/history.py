"""Aggregated history on ten million stored points, and the device list among 100,000 devices,
through the REST API of a running node, for each store.

    .venv/bin/python benchmarks/history.py                       # SQLite, then Redis (127.0.0.1:6379/10)
    .venv/bin/python benchmarks/history.py --stores sqlite --points 1000000
    .venv/bin/python benchmarks/history.py --stores postgres     # PostgreSQL at 127.0.0.1:5432 (a new database)

For each store: fill it (one device with a year of one series, ``--points`` points, and
``--devices`` more devices) through the store's own API, start ``twistd -n tbcoap`` on it, then time
each call (the best of three): a year in one-hour buckets with every aggregation, the newest day in
one-minute buckets, one raw history page of 100,000 points (the most one call returns), and device
pages sorted and searched. While the year is aggregated, a device keeps posting telemetry over
CoAP (its worst answer time is printed), and with Redis a second connection PINGs Redis (its
worst answer time shows how long one script holds Redis). The node's peak RSS is printed after
the raw page and after the aggregations.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from queue import Empty
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from run import KEY, TOKEN, memory_mb, start_tbcoap  # noqa: E402

from tests.blocking import Coap  # noqa: E402
from tests.redisutil import Resp  # noqa: E402

YEAR_MS = 365 * 24 * 3600 * 1000
HOUR_MS, MINUTE_MS, DAY_MS = 3600 * 1000, 60 * 1000, 24 * 3600 * 1000
END = 1_767_225_600_000  # 2026-01-01T00:00Z: the series is the year before it
START = END - YEAR_MS


def fill(store_url, points, devices, queue):
    """Fill the store through its API (runs in a process of its own, with its own reactor)."""
    from twisted.internet import defer, task

    from tbcoap.models import Device, new_id

    if store_url.startswith("sqlite"):
        from tbcoap_sqlite import make_store
    elif store_url.startswith("postgres"):
        from tbcoap_postgres import make_store
    else:
        from tbcoap_redis import make_store

    async def run(reactor):
        store = make_store(store_url, {})
        await store.open()
        started = time.perf_counter()
        device = await store.add_device(Device(id=new_id(), name="bench"), TOKEN)
        step = YEAR_MS // points
        batch, pending = 20_000, []
        for first in range(0, points, batch):
            rows = [(START + i * step, "temperature", 15 + (i % 1000) / 100) for i in range(first, min(first + batch,
                                                                                                      points))]
            pending.append(store.save_telemetry(device.id, rows))
            if len(pending) >= 2:  # (four of 20,000 points could wait past Redis's 5 s answer time)
                await defer.gatherResults(pending)
                pending = []
        await defer.gatherResults(pending)
        point_seconds = time.perf_counter() - started
        started = time.perf_counter()
        while (await store.rollup_telemetry(END + DAY_MS, 10_000))[1]:  # what the retention passes do
            pass
        roll_seconds = time.perf_counter() - started
        await check_oracle(store, device.id)
        started = time.perf_counter()
        for first in range(0, devices, 1000):
            await defer.gatherResults([store.add_device(Device(id=new_id(), name=f"device-{n:06d}"), f"tok-{n:06d}")
                                       for n in range(first, min(first + 1000, devices))])
        await store.close()
        queue.put((point_seconds, roll_seconds, time.perf_counter() - started))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


async def check_oracle(store, device_id):
    """The year in hourly buckets (aligned and not) from the rollups against the raw computation
    (the store with its rollups switched off): prints the time of each and the largest difference."""
    worst = 0.0
    timing = {}
    for start in (START, START + 12_345):
        for agg in ("AVG", "MIN", "MAX", "SUM", "COUNT"):
            answers = []
            for rollups in (True, False):
                store.rollups = rollups
                started = time.perf_counter()
                found = await store.telemetry_aggregate(device_id, ["temperature"], start, END, HOUR_MS, agg, 100_000,
                                                        False)
                answers.append(found["temperature"])
                timing.setdefault(rollups, []).append(time.perf_counter() - started)
            store.rollups = True
            (fast, raw) = answers
            assert [ts for ts, _ in fast] == [ts for ts, _ in raw] and len(fast) >= 8759, agg
            for (_, a), (_, b) in zip(fast, raw):
                assert type(a) is type(b), (agg, a, b)
                worst = max(worst, abs(a - b) / max(abs(b), 1e-300))
    print(f"oracle: rollup answers equal the raw ones (largest relative difference {worst:.1e}); "
          f"in the store: rollups {max(timing[True]):.3f} s at most, raw {min(timing[False]):.3f} s at least", flush=True)


def get(port, path, query):
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"X-Authorization": f"Bearer {KEY}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        body = json.loads(r.read())
    return time.perf_counter() - started, body


def best_of(port, path, query, times=3):
    runs = [get(port, path, query) for _ in range(times)]
    return min(t for t, _ in runs), runs[0][1]


class Prober(threading.Thread):
    """Sends one request after another (CoAP telemetry, or a Redis PING) and keeps the answer times."""

    def __init__(self, ask):
        super().__init__(daemon=True)
        self.ask, self.times, self.running = ask, [], True

    def run(self):
        while self.running:
            started = time.perf_counter()
            self.ask()
            self.times.append(time.perf_counter() - started)
            time.sleep(0.005)

    def stop(self):
        self.running = False
        self.join()
        return max(self.times), statistics.quantiles(self.times, n=100)[98] if len(self.times) > 2 else max(self.times)


def measure(name, store_arg, store_url, args):
    with tempfile.TemporaryDirectory() as workdir:
        if store_url is None:
            store_url = "sqlite://" + os.path.join(workdir, "tbcoap.sqlite3")
        queue = multiprocessing.Queue()
        child = multiprocessing.Process(target=fill, args=(store_url, args.points, args.devices, queue))
        child.start()
        while True:  # (the filling process may fail: then say so rather than wait forever)
            try:
                point_seconds, roll_seconds, device_seconds = queue.get(timeout=5)
                break
            except Empty:
                if not child.is_alive():
                    raise SystemExit(f"{name}: filling the store failed (exit code {child.exitcode})") from None
        child.join()
        print(f"\n{name}: filled {args.points:,} points in {point_seconds:.0f} s "
              f"({args.points / point_seconds:,.0f}/s), rolled up in {roll_seconds:.0f} s, {args.devices:,} devices in "
              f"{device_seconds:.0f} s", flush=True)
        proc, coap_port, http = start_tbcoap(workdir, store_arg, create=False)
        try:
            device = get(http, "/api/tenant/device", {"deviceName": "bench"})[1]["id"]["id"]
            series = f"/api/plugins/telemetry/DEVICE/{device}/values/timeseries"
            rows = []
            seconds, body = best_of(http, series, {"keys": "temperature", "startTs": START, "endTs": END,
                                                   "limit": 100_000, "orderBy": "ASC"})
            rows.append(("raw history page, 100,000 points", seconds, len(body["temperature"])))
            raw_peak = memory_mb(proc.pid)[1]
            year = {"keys": "temperature", "startTs": START, "endTs": END, "interval": HOUR_MS, "limit": 100_000}
            coap = Coap(("127.0.0.1", coap_port))
            device_probe = Prober(lambda: coap.request(2, f"/api/v1/{TOKEN}/telemetry", b'{"probe":1}'))
            redis_probe = None
            if store_url.startswith("redis"):
                pinger = Resp.for_url(store_url.split("?")[0])
                redis_probe = Prober(lambda: pinger.call("PING"))
                redis_probe.start()
            device_probe.start()
            time.sleep(1)
            idle_worst = max(device_probe.times)
            for agg in ("AVG", "MIN", "MAX", "SUM", "COUNT"):
                seconds, body = best_of(http, series, {**year, "agg": agg})
                rows.append((f"a year, 1 h buckets, {agg}", seconds, len(body["temperature"])))
            seconds, body = best_of(http, series, {**year, "startTs": START + 12_345, "agg": "AVG"})
            rows.append(("a year, 1 h buckets from 12.345 s past, AVG", seconds, len(body["temperature"])))
            device_worst, device_p99 = device_probe.stop()
            redis_worst = redis_probe.stop()[0] if redis_probe else None
            coap.close()
            agg_peak = memory_mb(proc.pid)[1]
            seconds, body = best_of(http, series, {"keys": "temperature", "startTs": END - DAY_MS, "endTs": END,
                                                   "interval": MINUTE_MS, "agg": "AVG", "limit": 100_000})
            rows.append(("the newest day, 1 min buckets, AVG", seconds, len(body["temperature"])))
            seconds, body = best_of(http, series, {**year, "agg": "MAX", "limit": 24, "orderBy": "DESC"})
            rows.append(("the newest 24 of a year's 1 h buckets, MAX", seconds, len(body["temperature"])))
            infos = "/api/tenant/deviceInfos"  # the web console's device list: 20 a page, with activity
            for label, path, query in (
                    ("devices: page 500 of 100 by name", "/api/tenant/devices", {"sortProperty": "name", "page": 500}),
                    ("devices: newest first, page 0", "/api/tenant/devices",
                     {"sortProperty": "createdTime", "sortOrder": "DESC"}),
                    ("devices: textSearch 'ice-0999'", "/api/tenant/devices", {"textSearch": "ice-0999"}),
                    ("console list: infos page 2,000 of 20", infos, {"pageSize": 20, "page": 2000, "sortProperty": "name"}),
                    ("console list: infos textSearch 'ice-0999'", infos, {"pageSize": 20, "textSearch": "ice-0999"})):
                seconds, body = best_of(http, path, {"pageSize": 100, "page": 0, **query})
                rows.append((label, seconds, len(body["data"])))
            print(f"{'call':46} {'seconds':>8} {'answer':>8}")
            for label, seconds, count in rows:
                print(f"{label:46} {seconds:8.3f} {count:8,}")
            aggregated = [s for label, s, _ in rows if label.startswith("a year")]
            print(f"points read per second: raw page {100_000 / rows[0][1]:,.0f}, "
                  f"aggregation {args.points / min(aggregated):,.0f}")
            print(f"device POSTs during the aggregations: worst {device_worst * 1000:.1f} ms, p99 "
                  f"{device_p99 * 1000:.1f} ms (idle worst {idle_worst * 1000:.1f} ms)")
            if redis_worst is not None:
                print(f"Redis PING during the aggregations: worst {redis_worst * 1000:.1f} ms")
            print(f"node peak RSS: {raw_peak:.0f} MB after the raw page, {agg_peak:.0f} MB after the aggregations",
                  flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            if store_url.startswith("redis"):
                client = Resp.for_url(store_url.split("?")[0])
                client.delete_prefix(store_url.split("prefix=")[1])
                client.close()
            if store_url.startswith("postgres"):
                import pgbench

                pgbench.drop_database(store_url)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,redis", help="comma-separated: sqlite, redis, postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server (and a user that may create databases) for a new database")
    args = parser.parse_args()
    for store in args.stores.split(","):
        if store == "sqlite":
            measure("SQLite", [], None, args)
        elif store == "redis":
            url = f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}"
            measure("Redis", ["--store", url], url, args)
        elif store == "postgres":
            import pgbench

            url = pgbench.new_database(args.postgres)
            measure("PostgreSQL", ["--store", url], url, args)
        else:
            raise SystemExit(f"unknown store {store!r}")


if __name__ == "__main__":
    main()
