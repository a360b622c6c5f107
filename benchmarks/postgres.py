"""The PostgreSQL store measured beside SQLite and Redis, in one run.

    .venv/bin/python benchmarks/postgres.py                     # PostgreSQL at 127.0.0.1:5432, Redis at :6379/10
    .venv/bin/python benchmarks/postgres.py --seconds 10 --rounds 3 --points 10000000

1. telemetry ingest with the generator of benchmarks/run.py (64 CON POSTs in flight, three values
   each): a node on SQLite (``--sync normal``, then ``--sync full``), on Redis and on PostgreSQL
   (its database with the server's ``synchronous_commit``, ``on`` by default, then with
   ``synchronous_commit = off`` set for that database alone), one after the other, ``--rounds``
   times in turn (the machine is shared: rounds show the noise); msgs/s, p50, p99.  Pairs that
   keep the same promise: SQLite ``--sync full`` and PostgreSQL ``on`` (an acknowledged point
   survives a power loss), SQLite ``--sync normal`` and PostgreSQL ``off`` (it survives a crash
   of the process, not of the machine);
2. two nodes (two twistd processes) on one PostgreSQL database, each driven by its own generator,
   against one node driven by two generators;
3. bytes per stored point: ``--disk-points`` points of one key written through each store's API;
   on disk for SQLite (the file) and PostgreSQL (history partitions with their indexes, and the
   whole database), in RAM for Redis (``used_memory``);
4. a year of one series in one-hour buckets over ``--points`` points, on each store, through the
   REST API of a node (benchmarks/history.py's ``measure``; ``--points 0`` skips it).

Every PostgreSQL database and Redis prefix used is made for the run and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import pgbench  # noqa: E402
from redis import cleanup, generators, node, stop, warm  # noqa: E402  (benchmarks/redis.py)
from run import start_tbcoap  # noqa: E402

from tests.redisutil import Resp  # noqa: E402


def ingest(stores, seconds, rounds):
    """``{name: [(rate, p50, p99, bad), ...]}``, the stores measured in turn, round after round."""
    results = {name: [] for name, _ in stores}
    for _ in range(rounds):
        for name, make in stores:
            store, drop, extra = make()
            with tempfile.TemporaryDirectory() as workdir:
                proc, coap, _ = start_tbcoap(workdir, (["--store", store] if store else []) + extra)
                try:
                    warm(coap)
                    rate, p50, p99, bad = generators([coap], seconds, 64)
                    results[name].append((rate, p50, p99, bad))
                    print(f"  {name:28} {rate:8.0f} msgs/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  bad {bad}",
                          flush=True)
                finally:
                    stop(proc)
            drop()
    return results


def one_and_two_nodes(server, seconds):
    rows = []
    for count in (1, 2):
        url = pgbench.new_database(server)
        with tempfile.TemporaryDirectory() as workdir:
            nodes = []
            try:
                for n in range(count):
                    os.makedirs(os.path.join(workdir, str(n)))
                    nodes.append(node(os.path.join(workdir, str(n)), url, create=not nodes))
                for _, coap, _ in nodes:
                    warm(coap)
                ports = [coap for _, coap, _ in nodes] * (2 // count)  # two generators either way
                rate, p50, p99, bad = generators(ports, seconds, 32)
                rows.append((f"{count} node{'s' if count > 1 else ''} on PostgreSQL, 2 generators x 32", rate, p50,
                             p99, bad))
            finally:
                for proc, _, _ in nodes:
                    stop(proc)
        pgbench.drop_database(url)
    return rows


def fill_points(kind, url, points, queue):
    """Write ``points`` points of one key (distinct ts, one a second) through the store's API and put
    the bytes they take on ``queue`` (a process of its own: it runs a reactor)."""
    from twisted.internet import defer, task

    from tbcoap.models import Device, new_id

    if kind == "sqlite":
        from tbcoap_sqlite import make_store
    elif kind == "redis":
        from tbcoap_redis import make_store
    else:
        from tbcoap_postgres import make_store

    def redis_used():
        client = Resp.for_url(url.split("?")[0])
        info = dict(line.split(":", 1) for line in client.call("INFO", "memory").splitlines() if ":" in line)
        client.close()
        return int(info["used_memory"])

    async def run(reactor):
        store = make_store(url, {})
        await store.open()
        device = await store.add_device(Device(id=new_id(), name="points"), "points-token")
        before = redis_used() if kind == "redis" else 0
        start = 1_767_225_600_000 - points * 1000
        for first in range(0, points, 10_000):  # 1,000 saves of 10 points in flight: writer batches
            await defer.gatherResults([
                store.save_telemetry(device.id, [(start + (i + j) * 1000, "temperature", 15 + ((i + j) % 1000) / 100)
                                                 for j in range(10)])
                for i in range(first, min(first + 10_000, points), 10)])
        await store.close()
        if kind == "redis":
            out = {"redis used_memory": redis_used() - before}
        elif kind == "sqlite":
            path = url[len("sqlite://"):]
            out = {"sqlite file": sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))}
        else:
            out = {f"postgres {k}": v for k, v in pgbench.disk_bytes(url).items()}
        queue.put({k: round(v / points, 1) for k, v in out.items()})

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def bytes_per_point(args):
    out = {}
    with tempfile.TemporaryDirectory() as workdir:
        stores = [("sqlite", "sqlite://" + os.path.join(workdir, "points.sqlite3"), lambda: None),
                  ("redis", f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}", None)]
        pg = pgbench.new_database(args.postgres)
        stores.append(("postgres", pg, lambda: pgbench.drop_database(pg)))
        for kind, url, drop in stores:
            queue = multiprocessing.Queue()
            child = multiprocessing.Process(target=fill_points, args=(kind, url, args.disk_points, queue))
            child.start()
            out.update(queue.get())
            child.join()
            if kind == "redis":
                cleanup(url)
            elif drop:
                drop()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server (and a user that may create databases) for the run's databases")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--disk-points", type=int, default=1_000_000)
    parser.add_argument("--points", type=int, default=10_000_000, help="points of the aggregated year (0: skip)")
    args = parser.parse_args()

    def sqlite(sync):
        return lambda: (None, lambda: None, ["--sync", sync])

    def redis():
        url = f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}"
        return url, lambda: cleanup(url), []

    def postgres(synchronous_commit=None):
        def make():
            url = pgbench.new_database(args.postgres, synchronous_commit=synchronous_commit)
            return url, lambda: pgbench.drop_database(url), []
        return make

    print(f"1. ingest, 64 CON POSTs in flight, {args.seconds:g} s a run, {args.rounds} rounds in turn", flush=True)
    stores = [("SQLite (--sync normal)", sqlite("normal")), ("SQLite (--sync full)", sqlite("full")),
              ("Redis", redis), ("PostgreSQL", postgres()), ("PostgreSQL, sync. commit off", postgres("off"))]
    results = ingest(stores, args.seconds, args.rounds)
    print(f"\n{'store':28} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} (medians of {args.rounds} rounds)")
    medians = {}
    for name, runs in results.items():
        medians[name] = [statistics.median(r[i] for r in runs) for i in range(3)]
        rate, p50, p99 = medians[name]
        print(f"{name:28} {rate:8.0f} {p50:7.2f} {p99:7.2f}")
    normal, full = medians["SQLite (--sync normal)"][0], medians["SQLite (--sync full)"][0]
    print(f"PostgreSQL / SQLite --sync normal: {medians['PostgreSQL'][0] / normal:.2f}x; "
          f"PostgreSQL (on) / SQLite --sync full: {medians['PostgreSQL'][0] / full:.2f}x; "
          f"PostgreSQL (off) / SQLite --sync normal: {medians['PostgreSQL, sync. commit off'][0] / normal:.2f}x; "
          f"Redis / SQLite --sync normal: {medians['Redis'][0] / normal:.2f}x", flush=True)

    print("\n2. one node against two on one PostgreSQL database", flush=True)
    for name, rate, p50, p99, bad in one_and_two_nodes(args.postgres, args.seconds):
        print(f"{name:46} {rate:8.0f} msgs/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  bad {bad}", flush=True)

    print(f"\n3. bytes per point, {args.disk_points:,} points of one key", flush=True)
    print(json.dumps(bytes_per_point(args), indent=1), flush=True)

    if args.points:
        import history

        print(f"\n4. a year of one series, {args.points:,} points, through REST", flush=True)
        history_args = argparse.Namespace(points=args.points, devices=1000)
        started = time.monotonic()
        history.measure("SQLite", [], None, history_args)
        redis_url = f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}"
        history.measure("Redis", ["--store", redis_url], redis_url, history_args)
        pg_url = pgbench.new_database(args.postgres)
        history.measure("PostgreSQL", ["--store", pg_url], pg_url, history_args)
        print(f"(section 4 took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
