"""A backup under load: telemetry throughput and p99 (1-second windows) before and while
`GET /api/admin/backup` takes and streams a snapshot of a SQLite node holding ``--points`` points, how long the snapshot took, and
the node's RSS.

    .venv/bin/python benchmarks/backup.py                   # 3M points
    .venv/bin/python benchmarks/backup.py --points 1000000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import loadgen  # noqa: E402
from retention import fill  # noqa: E402
from run import KEY, TOKEN, memory_mb, payload, start_tbcoap  # noqa: E402


def drive(coap, seconds):
    result = loadgen.run(("127.0.0.1", coap), f"/api/v1/{TOKEN}/telemetry", payload, seconds=seconds,
                         inflight=64, ports=256)
    return result.rate, result.p99, result.errors + result.lost


def windows(coap, count=None, while_alive=None):
    """1-second load windows (``count`` of them, or while the thread lives): the mean rate, the worst
    window's p99, errors and lost, and how many windows ran."""
    rates, p99s, bad = [], [], 0
    while (count is not None and len(rates) < count) or (while_alive is not None and while_alive.is_alive()):
        rate, p99, errors = drive(coap, 1.0)
        rates.append(rate)
        p99s.append(p99)
        bad += errors
    return sum(rates) / len(rates), max(p99s), bad, len(rates)


def download(http, path, out):
    request = urllib.request.Request(f"http://127.0.0.1:{http}/api/admin/backup",
                                     headers={"Authorization": f"Bearer {KEY}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r, open(path, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
    out["seconds"] = time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=3_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        database = os.path.join(workdir, "tbcoap.sqlite3")
        queue = multiprocessing.Queue()
        child = multiprocessing.Process(target=fill, args=("sqlite://" + database, args.points, queue))
        child.start()
        stored = queue.get()
        child.join()
        print(f"SQLite with {stored:,} points: {os.path.getsize(database) / 2**20:,.0f} MB", flush=True)
        proc, coap, http = start_tbcoap(workdir, [], create=False)
        try:
            drive(coap, 1.0)
            rate, p99, bad, n = windows(coap, count=int(args.seconds))
            print(f"  without a backup:  {rate:8,.0f} msgs/s  worst p99 {p99:6.2f} ms  {bad} errors/lost "
                  f"({n} windows of 1 s)", flush=True)
            out = {}
            target = os.path.join(workdir, "copy.sqlite3")
            thread = threading.Thread(target=download, args=(http, target, out))
            thread.start()
            rate, p99, bad, n = windows(coap, while_alive=thread)
            thread.join()
            print(f"  during the backup: {rate:8,.0f} msgs/s  worst p99 {p99:6.2f} ms  {bad} errors/lost "
                  f"({n} windows of 1 s)", flush=True)
            conn = sqlite3.connect(target)
            points = conn.execute("SELECT count(*) FROM ts_kv").fetchone()[0]
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            conn.close()
            print(f"  the backup: {os.path.getsize(target) / 2**20:,.0f} MB in {out['seconds']:.1f} s "
                  f"(snapshot and download), {points:,} points, quick_check {check}; "
                  f"node RSS {memory_mb(proc.pid)[0]:.0f} MB (peak {memory_mb(proc.pid)[1]:.0f} MB)", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
