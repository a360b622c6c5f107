"""Live subscriptions under load: many WebSocket subscribers of devices that post telemetry over
CoAP, and how long a stored point takes to reach them.

    .venv/bin/python benchmarks/live.py                        # 1,000 subscribers of 100 devices, 20 s
    .venv/bin/python benchmarks/live.py --store redis://127.0.0.1:6379/9?prefix=bench-live
    .venv/bin/python benchmarks/live.py --subscribers 100 --devices 10 --rate 5

Starts ``twistd -n tbcoap`` (a fresh SQLite file unless ``--store``), creates the devices, opens
the subscribers (ThingsBoard 3's ``/api/ws/plugins/telemetry?token=``, one ``tsSubCmds`` each, the
same number per device), then every device posts ``{"seq": n}`` as a CON request ``--rate`` times a
second.  For each update a subscriber receives it takes the time since the device got its 2.01
(and since it sent the POST), and prints p50 and p99 of both, the updates expected and received,
the node's CPU (share of one core while posting) and its memory (RSS before the subscribers, with
them, at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402
from loadgen import encode_post  # noqa: E402

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS  # noqa: E402
from twisted.internet import defer, protocol, reactor, task  # noqa: E402


def cpu_seconds(pid):
    """User and system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")


class Results:
    def __init__(self):
        self.acked = {}  # (device index, seq) -> monotonic time of its 2.01
        self.sent = {}  # (device index, seq) -> monotonic time the POST went out
        self.after_ack, self.after_post = [], []
        self.received = 0
        self.early = []  # updates that came before the 2.01 reached the device (matched afterwards)


class Subscriber(WebSocketClientProtocol):
    def onOpen(self):
        factory = self.factory
        self.sendMessage(json.dumps({"tsSubCmds": [{"entityType": "DEVICE", "entityId": factory.device_id,
                                                    "cmdId": 1, "keys": "seq"}]}).encode())

    def onMessage(self, payload, isBinary):
        now = time.monotonic()
        factory = self.factory
        update = json.loads(payload)
        if not factory.first.called:
            factory.first.callback(None)
            return
        results = factory.results
        for _ts, value in (update.get("data") or {}).get("seq", []):
            key = (factory.index, int(value))
            results.received += 1
            if key in results.acked:
                results.after_ack.append(now - results.acked[key])
            else:
                results.early.append((key, now))
            if key in results.sent:
                results.after_post.append(now - results.sent[key])


class Devices(protocol.DatagramProtocol):
    """Every device's CON POSTs from one UDP socket; a 2.01 is matched by its message id."""

    def __init__(self, address, tokens, results):
        self.address, self.tokens, self.results = address, tokens, results
        self.mid = 0
        self.waiting = {}  # mid -> (device index, seq)
        self.errors = 0

    def post(self, index, seq):
        self.mid = (self.mid + 1) & 0xFFFF
        key = (index, seq)
        self.waiting[self.mid] = key
        path = [b"api", b"v1", self.tokens[index].encode(), b"telemetry"]
        self.results.sent[key] = time.monotonic()
        self.transport.write(encode_post(path, b'{"seq":%d}' % seq, self.mid, self.mid.to_bytes(2, "big")),
                             self.address)

    def datagramReceived(self, data, address):
        mid = int.from_bytes(data[2:4], "big")
        key = self.waiting.pop(mid, None)
        if key is None:
            return
        if data[1] != 0x41:  # 2.01
            self.errors += 1
            return
        self.results.acked[key] = time.monotonic()


@defer.inlineCallbacks
def drive(args, proc, coap_port, http_port):
    results = Results()
    tokens, ids = [], []
    for i in range(args.devices):
        token = f"LIVE_{i:05d}_{os.getpid()}"
        device = bench.rest(http_port, "POST", f"/api/device?accessToken={token}",
                            {"name": f"live-{os.getpid()}-{i}"})
        tokens.append(token)
        ids.append(device["id"]["id"])
    rss_before, _ = bench.memory_mb(proc.pid)

    firsts = []
    for n in range(args.subscribers):
        index = n % args.devices
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{http_port}/api/ws/plugins/telemetry?token={bench.KEY}")
        factory.protocol = Subscriber
        factory.device_id, factory.index, factory.results = ids[index], index, results
        factory.first = defer.Deferred()
        connectWS(factory)
        firsts.append(factory.first)
        if n % 100 == 99:
            yield task.deferLater(reactor, 0.05, lambda: None)
    yield defer.gatherResults(firsts)
    yield task.deferLater(reactor, 1.5, lambda: None)  # the subscriptions' settle reads are done
    rss_subscribed, _ = bench.memory_mb(proc.pid)

    devices = Devices(("127.0.0.1", coap_port), tokens, results)
    port = reactor.listenUDP(0, devices, interface="127.0.0.1")
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    cpu_start, wall_start = cpu_seconds(proc.pid), time.monotonic()
    seq = 0
    interval = 1.0 / args.rate
    while time.monotonic() - wall_start < args.seconds:
        seq += 1
        for index in range(args.devices):  # spread over the interval, not in one burst
            devices.post(index, seq)
            if index % 10 == 9:
                yield task.deferLater(reactor, interval / (args.devices / 10), lambda: None)
    yield task.deferLater(reactor, 2.0, lambda: None)  # the last updates arrive
    cpu = (cpu_seconds(proc.pid) - cpu_start) / (time.monotonic() - wall_start)
    rss_end, peak = bench.memory_mb(proc.pid)
    for key, when in results.early:  # updates faster than the device's own 2.01
        if key in results.acked:
            results.after_ack.append(when - results.acked[key])
    posts = args.devices * seq
    expected = posts * (args.subscribers // args.devices)
    print(f"{args.subscribers} subscribers of {args.devices} devices, {args.rate:g} posts/s each for "
          f"{args.seconds:g} s ({posts} posts, {devices.errors} not 2.01, {posts - len(results.acked)} unanswered)")
    print(f"updates received {results.received} of {expected} "
          f"({results.received / expected * 100 if expected else 0:.1f}%), {len(results.early)} before the 2.01")
    print(f"latency from the 2.01   p50 {percentile(results.after_ack, 0.5):7.2f} ms   "
          f"p99 {percentile(results.after_ack, 0.99):7.2f} ms")
    print(f"latency from the POST   p50 {percentile(results.after_post, 0.5):7.2f} ms   "
          f"p99 {percentile(results.after_post, 0.99):7.2f} ms")
    print(f"node CPU {cpu * 100:.0f}% of one core while posting; RSS {rss_before:.0f} MB before the "
          f"subscribers, {rss_subscribed:.0f} MB with them, {rss_end:.0f} MB at the end (peak {peak:.0f} MB)")
    port.stopListening()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1.0, help="posts per second of each device (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--store", help="--store of the node (default: a fresh SQLite file)")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="tbcoap-live-")
    extra = ["--ws-max-connections-per-key", str(args.subscribers + 10)]
    if args.store:
        extra += ["--store", args.store]
    proc, coap_port, http_port = bench.start_tbcoap(workdir, extra, create=False)
    failure = []

    def done(result):
        if hasattr(result, "getTraceback"):
            failure.append(result.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(lambda: drive(args, proc, coap_port, http_port).addBoth(done))
    try:
        reactor.run()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    if failure:
        raise SystemExit(failure[0])


if __name__ == "__main__":
    main()
