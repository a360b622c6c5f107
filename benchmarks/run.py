"""One command, both servers, side by side: the do-nothing txThings baseline and tbcoap's
full durable telemetry path (token auth, typing, SQLite commit before each 2.01).

    .venv/bin/python benchmarks/run.py                      # 10 s each, 64 in flight
    .venv/bin/python benchmarks/run.py --messages 1000000   # memory: RSS after 1M messages
    .venv/bin/python benchmarks/run.py --only tbcoap --messages 10000000 --progress

Prints msgs/s, p50/p99 latency, errors, lost, the server's CPU time per answer (all its threads:
steadier than msgs/s on a busy machine) and its RSS (now and peak).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
KEY = "bench-key"
TOKEN = "BENCH_TOKEN_0123456789"
LISTEN = re.compile(r"(CoAP|HTTP) listening on (?:udp|tcp) \S+:(\d+)")


def memory_mb(pid):
    """(RSS, peak RSS) of a process in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, amount = line.split()[:2]
                values[key] = int(amount) / 1024
    return values.get("VmRSS:", float("nan")), values.get("VmHWM:", float("nan"))


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_baseline(workdir):
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "baseline_txthings.py"), "0"],
                            stdout=subprocess.PIPE, text=True, cwd=workdir)
    port = int(proc.stdout.readline().split()[1])
    return proc, port


def tokens(devices=1):
    """The access tokens of the benchmark's ``devices`` devices (TOKEN first)."""
    return [TOKEN] + [f"{TOKEN}_{n}" for n in range(1, devices)]


def telemetry_paths(devices=1):
    return [f"/api/v1/{token}/telemetry" for token in tokens(devices)]


def start_tbcoap(workdir, extra, create=True, twistd=None, devices=1):
    """Start ``twistd`` (this environment's by default) on free ports with ``devices`` devices;
    ``(process, CoAP port, HTTP port)``."""
    log_path = os.path.join(workdir, "tbcoap.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([twistd or os.path.join(BIN, "twistd"), "-n", "--pidfile=", "tbcoap", "--coap-port", "0",
                             "--http-port", "0", "--coap-interface", "127.0.0.1", "--data-dir", workdir,
                             "--admin-key", KEY, *extra], stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            ports = dict(LISTEN.findall(f.read()))
        if len(ports) == 2:
            try:
                rest(int(ports["HTTP"]), "GET", "/api/health")
                if create:  # (a second node on a shared store finds the devices there)
                    for n, token in enumerate(tokens(devices)):
                        rest(int(ports["HTTP"]), "POST", f"/api/device?accessToken={token}",
                             {"name": "bench" if n == 0 else f"bench-{n}"})
                return proc, int(ports["CoAP"]), int(ports["HTTP"])
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    with open(log_path, encoding="utf-8", errors="replace") as f:
        tail = "".join(f.readlines()[-15:])
    raise SystemExit(f"tbcoap did not start in 30 s; the end of {log_path}:\n{tail}")


def rest(port, method, path, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read() or b"null")


def payload(i):
    return b'{"temperature":21.5,"humidity":%d,"ok":true}' % (i % 100)


def measure(name, proc, port, args):
    progress = None
    if args.progress:
        def progress(done, elapsed):
            rss, _ = memory_mb(proc.pid)
            print(f"  {name}: {done:>10,} answered  {done / elapsed:8.0f}/s  RSS {rss:6.1f} MB", flush=True)
    paths = telemetry_paths(getattr(args, "devices", 1))
    loadgen.run(("127.0.0.1", port), paths, payload, seconds=1.0, inflight=args.inflight, ports=args.ports)  # warm-up
    cpu = cpu_seconds(proc.pid)
    result = loadgen.run(("127.0.0.1", port), paths, payload, seconds=args.seconds,
                         messages=args.messages, inflight=args.inflight, ports=args.ports, on_progress=progress)
    result.cpu_us = (cpu_seconds(proc.pid) - cpu) * 1e6 / max(result.answered, 1)
    result.rss, result.peak = memory_mb(proc.pid)
    result.name = name
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10)")
    parser.add_argument("--messages", type=int, help="run until this many answers instead of --seconds")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--ports", type=int, default=256, help="source ports to rotate over")
    parser.add_argument("--only", choices=("baseline", "tbcoap"))
    parser.add_argument("--progress", action="store_true", help="print progress and RSS every second")
    parser.add_argument("--sync", default="normal", choices=("normal", "full"))
    parser.add_argument("--store", help="tbcoap's --store (default: its SQLite file)")
    parser.add_argument("--devices", type=int, default=1, help="requests rotate over this many devices (default 1)")
    args = parser.parse_args()
    if args.messages:
        args.seconds = None
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        if args.only != "tbcoap":
            proc, port = start_baseline(workdir)
            try:
                results.append(measure("txThings 0.3.0, do-nothing", proc, port, args))
            finally:
                proc.kill()
                proc.wait()
        if args.only != "baseline":
            extra = ["--sync", args.sync] + (["--store", args.store] if args.store else [])
            proc, port, http = start_tbcoap(workdir, extra, devices=args.devices)
            try:
                name = f"tbcoap, {args.store.split('://')[0]}" if args.store else f"tbcoap, durable (--sync {args.sync})"
                results.append(measure(name, proc, port, args))
                results[-1].stats = rest(http, "GET", "/api/admin/stats")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    print(f"\n{args.inflight} CON requests in flight over {args.ports} source ports; "
          f"{'%d messages' % args.messages if args.messages else '%g s' % args.seconds} per server\n")
    print(f"{'server':38} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'answered':>11} {'errors':>7} {'lost':>6}"
          f" {'CPU us':>7} {'RSS MB':>7} {'peak MB':>8}")
    for r in results:
        print(f"{r.name:38} {r.rate:9.0f} {r.p50:8.2f} {r.p99:8.2f} {r.answered:11,} {r.errors:7} {r.lost:6}"
              f" {r.cpu_us:7.1f} {r.rss:7.1f} {r.peak:8.1f}")
    if len(results) == 2 and results[0].rate:
        print(f"\ntbcoap / baseline: {results[1].rate / results[0].rate:.2f}x")
    if results and hasattr(results[-1], "stats"):
        stats = results[-1].stats
        print(f"tbcoap store: {json.dumps(stats['store'])}")
        print(f"tbcoap coap: {json.dumps({k: v for k, v in stats['coap'].items() if not k[0].isdigit()})}")


if __name__ == "__main__":
    main()
