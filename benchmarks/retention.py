"""Retention under load: telemetry throughput and p99 without retention and while a retention pass
deletes millions of expired points, and the store's size before and after.

    .venv/bin/python benchmarks/retention.py                        # 3M points, SQLite then Redis
    .venv/bin/python benchmarks/retention.py --points 1000000 --stores sqlite

For each store: fill it through the store's API with ``--points`` points two days old (1,000
devices, three keys; SQLite: one file copied for two nodes, Redis: two prefixes). Then three nodes
one after the other, each driven with the generator of benchmarks/run.py in ``--windows`` windows
of ``--seconds``: a node without retention a minute after its start, a node with ``--ts-ttl 1d``
while its first pass (a minute after its start) deletes, the first node again. The machine's own
drift is as large as the effect sought, hence medians and the two control runs around the
measured one. Sizes: the SQLite file with its free pages (SQLite reuses them; the file does not
shrink), Redis's used_memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import loadgen  # noqa: E402
from run import KEY, TOKEN, memory_mb, payload, start_tbcoap  # noqa: E402

from tests.redisutil import Resp  # noqa: E402

DAY_MS = 86_400_000


def fill(store_url, points, queue):
    """``points`` points, two days old, over 1,000 devices and three keys (a process of its own)."""
    from twisted.internet import defer, task

    from tbcoap.models import Device, new_id

    if store_url.startswith("sqlite"):
        from tbcoap_sqlite import make_store
    else:
        from tbcoap_redis import make_store

    async def run(reactor):
        store = make_store(store_url, {})
        await store.open()
        await store.add_device(Device(id=new_id(), name="bench"), TOKEN)
        devices = [await store.add_device(Device(id=new_id(), name=f"old-{n}"), f"old-token-{n}") for n in range(1000)]
        start = int(time.time() * 1000) - 2 * DAY_MS
        per_device = points // (len(devices) * 3)
        pending = []
        for device in devices:
            rows = [(start + i * 1000, key, i % 100) for i in range(per_device) for key in ("a", "b", "c")]
            pending.append(store.save_telemetry(device.id, rows))
            if len(pending) >= 8:
                await defer.gatherResults(pending)
                pending = []
        await defer.gatherResults(pending)
        await store.close()
        queue.put(per_device * len(devices) * 3)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def stats(http):
    request = urllib.request.Request(f"http://127.0.0.1:{http}/api/admin/stats",
                                     headers={"X-Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def drive(coap, seconds):
    result = loadgen.run(("127.0.0.1", coap), f"/api/v1/{TOKEN}/telemetry", payload, seconds=seconds,
                         inflight=64, ports=256)
    return result.rate, result.p99, result.errors + result.lost


def sqlite_size(path):
    conn = sqlite3.connect(path)
    pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count",
                                                                                "page_size"))
    conn.close()
    wal = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    return f"file {os.path.getsize(path) / 2**20:,.0f} MB (+ WAL {wal / 2**20:,.0f} MB), " \
           f"{free * size / 2**20:,.0f} MB of it free pages for new data"


def redis_size(url):
    client = Resp.for_url(url.split("?")[0])
    info = dict(line.split(":", 1) for line in client.call("INFO", "memory").splitlines() if ":" in line)
    client.close()
    return f"Redis used_memory {int(info['used_memory']) / 2**20:,.0f} MB"


def filled(store_url, points):
    """Fill ``store_url`` in a process of its own; (points stored, seconds it took)."""
    queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=fill, args=(store_url, points, queue))
    started = time.perf_counter()
    child.start()
    stored = queue.get()
    child.join()
    return stored, time.perf_counter() - started


def windows(coap, args):
    """``args.windows`` load windows of ``args.seconds``: [(rate, p99, errors + lost)]."""
    return [drive(coap, args.seconds) for _ in range(args.windows)]


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2


def show(label, rows):
    rates, p99s = [r[0] for r in rows], [r[1] for r in rows]
    print(f"  {label:34} median {median(rates):8,.0f} msgs/s  p99 median {median(p99s):6.2f} ms, worst "
          f"{max(p99s):6.2f} ms  {sum(r[2] for r in rows)} errors/lost", flush=True)
    return median(rates), median(p99s)


def control(workdir, extra, args):
    """Windows a minute after the start of a node without --ts-ttl on the same data."""
    proc, coap, _ = start_tbcoap(workdir, extra, create=False)
    try:
        launched = time.monotonic()
        drive(coap, 1.0)
        time.sleep(max(0.0, launched + 60 - time.monotonic()))
        return windows(coap, args)
    finally:
        proc.terminate()
        proc.wait(60)


def measure(name, kind, args):
    """Control node, retention node, control node again (the machine drifts), each from the start."""
    with tempfile.TemporaryDirectory() as workdir:
        dirs = {role: os.path.join(workdir, role) for role in ("control", "retention")}
        for path in dirs.values():
            os.mkdir(path)
        if kind == "sqlite":
            urls = {role: "sqlite://" + os.path.join(path, "tbcoap.sqlite3") for role, path in dirs.items()}
            stored, took = filled(urls["control"], args.points)
            shutil.copy(urls["control"][len("sqlite://"):], urls["retention"][len("sqlite://"):])
            where, size, extra = urls["retention"][len("sqlite://"):], sqlite_size, {}
        else:
            urls = {role: f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}" for role in dirs}
            stored, took = filled(urls["control"], args.points)
            filled(urls["retention"], args.points)
            where, size = urls["retention"], redis_size
            extra = {role: ["--store", url] for role, url in urls.items()}
        print(f"\n{name}: {stored:,} expired points written in {took:.0f} s; before: {size(where)}", flush=True)
        try:
            first = control(dirs["control"], extra.get("control", []), args)
            proc, coap, http = start_tbcoap(dirs["retention"], [*extra.get("retention", []), "--ts-ttl", "1d"],
                                            create=False)
            try:
                launched = time.monotonic()
                drive(coap, 1.0)
                while stats(http)["retention"]["expiredPoints"] == 0:
                    time.sleep(0.2)
                began = time.monotonic() - launched
                during = windows(coap, args)
                deleted = stats(http)["retention"]["expiredPoints"]
                while stats(http)["retention"]["passes"] == 0:
                    time.sleep(0.5)
                ended = time.monotonic() - launched
                total = stats(http)["retention"]["expiredPoints"]
                rss = memory_mb(proc.pid)[0]
            finally:
                proc.terminate()
                proc.wait(60)
            second = control(dirs["control"], extra.get("control", []), args)
            rate_c, p99_c = show("without retention (two nodes)", first + second)
            rate_r, p99_r = show(f"during the pass (began at {began:.0f} s)", during)
            print(f"  during / without: throughput {rate_r / rate_c:.3f}, p99 {p99_r / p99_c:.3f}; "
                  f"{deleted:,} points deleted in those windows", flush=True)
            print(f"  the pass deleted {total:,} points and ended {ended:.0f} s after the start "
                  f"(the load stopped at {began + args.windows * args.seconds:.0f} s); RSS {rss:.0f} MB", flush=True)
            print(f"  after: {size(where)}", flush=True)
        finally:
            if kind == "redis":
                client = Resp.for_url(args.redis)
                for url in urls.values():
                    client.delete_prefix(url.split("prefix=")[1])
                client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=3_000_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one load window")
    parser.add_argument("--windows", type=int, default=6, help="load windows per node")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    for store in args.stores.split(","):
        measure({"sqlite": "SQLite", "redis": "Redis"}[store], store, args)

if __name__ == "__main__":
    main()
