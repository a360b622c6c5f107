"""Telemetry POST throughput: a tbcoap server under a closed-loop CoAP load.

Starts ``twistd -n tbcoap`` on a fresh data dir (full durable path: token
auth, typing, SQLite group commit before each 2.01), creates a device, then
keeps N confirmable requests in flight, one per source port (so no port
reuses a Message ID inside EXCHANGE_LIFETIME at these rates), for a fixed
time.  Prints msgs/s, p50/p99 latency and the server's RSS.

    .venv/bin/python benchmarks/telemetry_load.py --seconds 10 --inflight 64
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LISTEN = re.compile(r"(CoAP|HTTP) listening on (?:udp|tcp) \S+:(\d+)")
KEY = "bench-key"


def encode_post(path_segments, payload, mid, token):
    """A CON POST datagram (hand-encoded to keep the client cheap)."""
    out = bytearray([0x40 | len(token), 2, mid >> 8, mid & 0xFF]) + token
    last = 0
    for segment in path_segments:
        delta, length = 11 - last, len(segment)
        last = 11
        if length < 13:
            out.append((delta << 4) | length)
        else:
            out += bytes([(delta << 4) | 13, length - 13])
        out += segment
    return bytes(out + b"\xff" + payload)


def start_server(data_dir, extra):
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    log = open(os.path.join(data_dir, "server.log"), "wb")
    proc = subprocess.Popen([twistd, "-n", "--pidfile=", "tbcoap", "--coap-port", "0", "--http-port", "0",
                             "--coap-interface", "127.0.0.1", "--data-dir", data_dir, "--admin-key", KEY, *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log.name, encoding="utf-8", errors="replace") as f:
            ports = dict(LISTEN.findall(f.read()))
        if len(ports) == 2:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{ports['HTTP']}/api/health", timeout=1)
                return proc, int(ports["CoAP"]), int(ports["HTTP"])
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start; see " + log.name)


def rest(http_port, method, path, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read() or b"null")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load(coap_port, token, seconds, inflight, timeout=5.0):
    """Closed loop: each of ``inflight`` sockets has one request outstanding."""
    selector = selectors.DefaultSelector()
    path = [b"api", b"v1", token.encode(), b"telemetry"]
    sockets = []
    for i in range(inflight):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", coap_port))
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ, i)
        sockets.append(s)
    mids = [0] * inflight
    sent_at = [0.0] * inflight
    latencies, errors, lost = [], 0, 0
    ts = int(time.time() * 1000) * 1000

    def send(i):
        nonlocal ts
        ts += 1
        mids[i] = (mids[i] + 1) & 0xFFFF
        payload = b'{"ts":%d,"values":{"temperature":21.5,"humidity":40,"ok":true}}' % (ts // 1000)
        sockets[i].send(encode_post(path, payload, mids[i], b"%04d" % i))
        sent_at[i] = time.perf_counter()

    start = time.perf_counter()
    end = start + seconds
    for i in range(inflight):
        send(i)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for key, _ in selector.select(timeout=0.1):
            i = key.data
            data = sockets[i].recv(2048)
            if len(data) < 4 or ((data[2] << 8) | data[3]) != mids[i]:
                continue
            latencies.append(time.perf_counter() - sent_at[i])
            if data[1] != 65:
                errors += 1
            send(i)
        now = time.perf_counter()
        for i in range(inflight):
            if now - sent_at[i] > timeout:
                lost += 1
                send(i)
    elapsed = time.perf_counter() - start
    for s in sockets:
        s.close()
    latencies.sort()
    return {
        "messages": len(latencies),
        "msgs_per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan"),
        "errors": errors,
        "lost": lost,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("server_args", nargs="*", help="extra twistd tbcoap options (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, coap_port, http_port = start_server(data_dir, args.server_args)
        try:
            rest(http_port, "POST", "/api/device?accessToken=BENCHTOKEN", {"name": "bench"})
            load(coap_port, "BENCHTOKEN", 1.0, args.inflight)  # warm-up
            result = load(coap_port, "BENCHTOKEN", args.seconds, args.inflight)
            result["server_rss_mb"] = rss_mb(proc.pid)
            stats = rest(http_port, "GET", "/api/admin/stats")
            result["store"] = stats["store"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"tbcoap telemetry POST, {args.inflight} in flight, {args.seconds:.0f} s")
    print(f"  {result['msgs_per_s']:.0f} msgs/s  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
          f"errors {result['errors']}  lost {result['lost']}  server RSS {result['server_rss_mb']:.0f} MB")
    print(f"  store: {json.dumps(result['store'])}")


if __name__ == "__main__":
    main()
