"""What metrics cost the hot path: tbcoap's telemetry throughput and p99 with request-latency
metrics off and on, alternately in one run, the "on" runs scraped once a second meanwhile (a
Prometheus scrapes every 15 s by default); and how long a scrape takes and how big it is.

    .venv/bin/python benchmarks/metrics.py                  # 3 rounds of 10 s each (off, then on)
    .venv/bin/python benchmarks/metrics.py --rounds 5 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402
from run import KEY, TOKEN, payload, start_tbcoap  # noqa: E402


def scrape(http):
    """(seconds, bytes) of one GET /metrics."""
    request = urllib.request.Request(f"http://127.0.0.1:{http}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as r:
        body = r.read()
    return time.perf_counter() - started, len(body)


def one_run(latency, seconds):
    with tempfile.TemporaryDirectory() as workdir:
        proc, coap, http = start_tbcoap(workdir, ["--latency-metrics", latency])
        scrapes, stop = [], threading.Event()

        def scraper():
            while not stop.wait(1.0):
                scrapes.append(scrape(http))

        try:
            loadgen.run(("127.0.0.1", coap), f"/api/v1/{TOKEN}/telemetry", payload, seconds=1.0, inflight=64, ports=256)
            thread = threading.Thread(target=scraper, daemon=True)
            if latency == "on":
                thread.start()
            result = loadgen.run(("127.0.0.1", coap), f"/api/v1/{TOKEN}/telemetry", payload, seconds=seconds,
                                 inflight=64, ports=256)
            stop.set()
            if latency == "on":
                thread.join()
        finally:
            proc.terminate()
            proc.wait(60)
        return result, scrapes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rates = {"off": [], "on": []}
    all_scrapes = []
    for _ in range(args.rounds):
        for latency in ("off", "on"):
            result, scrapes = one_run(latency, args.seconds)
            rates[latency].append(result.rate)
            all_scrapes += scrapes
            print(f"  metrics {latency:3}  {result.rate:8,.0f} msgs/s  p50 {result.p50:5.2f} ms  "
                  f"p99 {result.p99:5.2f} ms  {result.errors + result.lost} errors/lost", flush=True)
    off, on = (sum(rates[k]) / len(rates[k]) for k in ("off", "on"))
    ratios = sorted(a / b for a, b in zip(rates["on"], rates["off"]))
    print(f"on / off: {on / off:.3f} of the means ({on:,.0f} / {off:,.0f} msgs/s), "
          f"{ratios[len(ratios) // 2]:.3f} the median of the rounds' ratios")
    if all_scrapes:
        worst = max(s for s, _ in all_scrapes)
        print(f"scrapes under load: {len(all_scrapes)}, worst {worst * 1000:.1f} ms, "
              f"{max(b for _, b in all_scrapes):,} bytes")


if __name__ == "__main__":
    main()
