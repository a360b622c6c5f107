"""The Redis store measured beside SQLite, one node beside two on one Redis, and Redis's memory.

    .venv/bin/python benchmarks/redis.py                       # Redis at 127.0.0.1:6379, db 10
    .venv/bin/python benchmarks/redis.py --redis redis://host:6379/10 --seconds 10

1. telemetry throughput and latency with the generator of benchmarks/run.py: the SQLite store,
   then the Redis store, in the same run;
2. two nodes (two twistd processes) on one Redis, each driven by its own generator process,
   against one node driven by two generators;
3. Redis memory per stored telemetry point and per device (INFO used_memory before and after).

Everything is written under prefixes of its own, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import loadgen  # noqa: E402
from run import TOKEN, cpu_seconds, memory_mb, payload, start_tbcoap  # noqa: E402

from tests.redisutil import Resp  # noqa: E402


def distinct_payloads(days_back=10):
    """Payloads with a ts of their own each, counting up from ``days_back`` days ago: no two points
    of a series share a ts, as with one device's real readings.  The default payloads carry no ts,
    so the node stamps them and the ~15 of each millisecond share one."""
    start = int(time.time() * 1000) - days_back * 86_400_000
    return lambda i: b'{"ts":%d,"values":%s}' % (start + i, payload(i))


def drive(port, seconds, inflight, queue, distinct=False):
    result = loadgen.run(("127.0.0.1", port), f"/api/v1/{TOKEN}/telemetry", distinct_payloads() if distinct else payload,
                         seconds=seconds, inflight=inflight, ports=256)
    queue.put((result.answered, result.elapsed, result.p50, result.p99, result.errors, result.lost))


def generators(ports, seconds, inflight, distinct=False):
    """One generator process per port, run together; (msgs/s, worst p50, worst p99, errors+lost)."""
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=drive, args=(port, seconds, inflight, queue, distinct)) for port in ports]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    rate = sum(answered / elapsed for answered, elapsed, *_ in results)
    return rate, max(r[2] for r in results), max(r[3] for r in results), sum(r[4] + r[5] for r in results)


def warm(port, distinct=False):
    """A second of load first; with ``distinct``, points of a day before those of the run."""
    loadgen.run(("127.0.0.1", port), f"/api/v1/{TOKEN}/telemetry", distinct_payloads(11) if distinct else payload,
                seconds=1.0, inflight=64, ports=256)


def node(workdir, store, create=True):
    return start_tbcoap(workdir, ["--store", store] if store else [], create)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def redis_pid(redis_url):
    """The Redis server's process id, when it runs on this machine (its CPU time is then read)."""
    client = Resp.for_url(redis_url)
    try:
        info = dict(line.split(":", 1) for line in client.call("INFO", "server").splitlines() if ":" in line)
    finally:
        client.close()
    pid = int(info["process_id"])
    return pid if os.path.exists(f"/proc/{pid}/stat") else None


def side_by_side(redis_url, seconds, rounds, distinct):
    """SQLite and Redis alternating, ``rounds`` times each; a row per run with the CPU time per
    answer of the node and of the Redis server."""
    rows = []
    server = redis_pid(redis_url)
    for _ in range(rounds):
        for name, store in (("SQLite (--sync normal)", None),
                            ("Redis", f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:8]}")):
            with tempfile.TemporaryDirectory() as workdir:
                proc, coap, http = node(workdir, store)
                try:
                    warm(coap, distinct)
                    before = cpu_seconds(proc.pid), cpu_seconds(server) if server else 0.0
                    rate, p50, p99, bad = generators([coap], seconds, 64, distinct)
                    answers = rate * seconds
                    node_us = (cpu_seconds(proc.pid) - before[0]) * 1e6 / answers
                    redis_us = (cpu_seconds(server) - before[1]) * 1e6 / answers if store and server else 0.0
                    rows.append((name, rate, p50, p99, bad, memory_mb(proc.pid)[0], node_us, redis_us))
                finally:
                    stop(proc)
            if store:
                cleanup(store)
    return rows


def one_and_two_nodes(redis_url, seconds):
    rows = []
    for count in (1, 2):
        store = f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory() as workdir:
            nodes = []
            try:
                for n in range(count):
                    os.makedirs(os.path.join(workdir, str(n)))
                    nodes.append(node(os.path.join(workdir, str(n)), store, create=not nodes))
                for _, coap, _ in nodes:
                    warm(coap)
                ports = [coap for _, coap, _ in nodes] * (2 // count)  # two generators either way
                rate, p50, p99, bad = generators(ports, seconds, 32)
                rows.append((f"{count} node{'s' if count > 1 else ''}, 2 generators x 32 in flight", rate, p50, p99, bad,
                             sum(memory_mb(proc.pid)[0] for proc, _, _ in nodes)))
            finally:
                for proc, _, _ in nodes:
                    stop(proc)
        cleanup(store)
    return rows


def memory_per_item(redis_url, queue, points=100_000, devices=10_000):
    """Bytes of Redis memory per device and per telemetry point (one key, distinct ts), put on
    ``queue``; runs in a process of its own (it runs a reactor)."""
    from twisted.internet import defer, task

    from tbcoap.models import Device, new_id
    from tbcoap_redis import make_store

    store_url = f"{redis_url}?prefix=bench-{uuid.uuid4().hex[:8]}"
    client = Resp.for_url(redis_url)

    def used():
        info = dict(line.split(":", 1) for line in client.call("INFO", "memory").splitlines() if ":" in line)
        return int(info["used_memory"])

    async def measure(reactor):
        store = make_store(store_url, {})
        await store.open()
        out = {}
        before = used()
        await defer.gatherResults([store.add_device(Device(id=new_id(), name=f"bench-device-{n}"), f"token-{n}")
                                   for n in range(devices)])
        out["bytesPerDevice"] = round((used() - before) / devices)
        device = await store.add_device(Device(id=new_id(), name="points"), "points-token")
        before = used()
        for start in range(0, points, 1000):
            await defer.gatherResults([store.save_telemetry(device.id, [(1_700_000_000_000 + i, "t", 21.5 + i % 7)])
                                       for i in range(start, start + 1000)])
        out["bytesPerPoint"] = round((used() - before) / points)
        await store.close()
        cleanup(store_url)
        queue.put(out)

    task.react(lambda reactor: defer.ensureDeferred(measure(reactor)))


def cleanup(store_url):
    prefix = store_url.split("prefix=")[1].split("&")[0]
    client = Resp.for_url(store_url.split("?")[0])
    client.delete_prefix(prefix)
    client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="SQLite and Redis alternating, this many times each")
    parser.add_argument("--distinct-ts", action="store_true",
                        help="side by side with a ts of its own in every message (see distinct_payloads)")
    parser.add_argument("--only-side-by-side", action="store_true", help="skip the two-node and memory parts")
    args = parser.parse_args()
    print(f"{'run':46} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'bad':>5} {'RSS MB':>7} {'node us':>8} {'redis us':>8}")
    rows = side_by_side(args.redis, args.seconds, args.rounds, args.distinct_ts)
    for name, rate, p50, p99, bad, rss, node_us, redis_us in rows:
        print(f"{name:46} {rate:8.0f} {p50:7.2f} {p99:7.2f} {bad:5} {rss:7.1f} {node_us:8.1f} {redis_us:8.1f}", flush=True)
    sqlite = statistics.median(row[1] for row in rows if row[0].startswith("SQLite"))
    redis = statistics.median(row[1] for row in rows if row[0] == "Redis")
    print(f"medians: SQLite {sqlite:.0f}, Redis {redis:.0f} msgs/s: Redis/SQLite {redis / sqlite:.3f}", flush=True)
    if args.only_side_by_side:
        return
    print(f"{'run':46} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'bad':>5} {'RSS MB':>7}")
    for name, rate, p50, p99, bad, rss in one_and_two_nodes(args.redis, args.seconds):
        print(f"{name:46} {rate:8.0f} {p50:7.2f} {p99:7.2f} {bad:5} {rss:7.1f}", flush=True)
    queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=memory_per_item, args=(args.redis, queue))
    child.start()
    print("redis memory:", json.dumps(queue.get()), flush=True)
    child.join()


if __name__ == "__main__":
    main()
