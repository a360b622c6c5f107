"""The whole durable telemetry path in one process, without the kernel's UDP: a real node (device
API, services, SQLite store with its writer thread, group commits) fed CON telemetry POSTs straight
into its CoAP message layer, 64 in flight, each answered 2.01 after its commit.

    .venv/bin/python benchmarks/hotpath.py                 # CPU microseconds per answer, 5 rounds
    .venv/bin/python benchmarks/hotpath.py --messages 50000 --rounds 3
    .venv/bin/python benchmarks/hotpath.py --devices 1000 --warm-up 4000   # many devices, steady state

The figure is the process's CPU time (every thread: the reactor and the store's writer) per
answer, which a busy machine disturbs far less than throughput: use it to see what a change to the
hot path costs.  benchmarks/ab.py gives the end-to-end figure over real UDP.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from twisted.internet import defer, task
from txthings import coap

from tbcoap.service import service_from_args

TOKEN = "BENCH_TOKEN_0123456789"
WARM_UP_IDS = 1 << 23  # the warm-up's requests are numbered from here: other message ids than the run's


def tokens(devices):
    return [TOKEN] + [f"{TOKEN}_{n}" for n in range(1, devices)]


def datagram(i, token=TOKEN):
    message = coap.Message(mtype=coap.CON, mid=(i >> 8) & 0xFFFF, code=coap.POST, token=b"%04x" % (i & 0xFFFF),
                           payload=b'{"temperature":21.5,"humidity":%d,"ok":true}' % (i % 100))
    for segment in (b"api", b"v1", token.encode(), b"telemetry"):
        message.opt.addOption(coap.StringOption(coap.URI_PATH, segment))
    return message.encode(), ("127.0.0.1", 20000 + (i & 255))


class Feeder:
    """The layer's transport: every answer lets the next request in."""

    def __init__(self, layer, total, inflight, devices=1, first=0):
        self.layer, self.total, self.sent, self.answered = layer, total, 0, 0
        self.done = defer.Deferred()
        names = tokens(devices)
        self.data = [datagram(i, names[i % devices]) for i in range(first, first + total)]
        self.inflight = inflight

    def start(self):
        for _ in range(self.inflight):
            self.send()

    def send(self):
        if self.sent < self.total:
            data, remote = self.data[self.sent]
            self.sent += 1
            self.layer.datagramReceived(data, remote)

    def write(self, data, address):
        if data[1] == 65:  # 2.01
            self.answered += 1
            if self.answered == self.total:
                self.done.callback(None)
            else:
                self.send()

    def sendto(self, data, address):  # the layer writes to its transport's socket
        self.write(data, address)

    @property
    def socket(self):
        return self

    def getHost(self):
        return None


async def one_round(reactor, messages, inflight, store=None, devices=1, warm_up=0):
    with tempfile.TemporaryDirectory() as folder:
        node = service_from_args(["--coap-port", "0", "--http-port", "0", "--coap-interface", "127.0.0.1",
                                  "--data-dir", folder, "--admin-key", "bench-key"]
                                 + (["--store", store] if store else []))
        node.startService()
        await node.opened
        for n, token in enumerate(tokens(devices)):
            await node.core.devices.create("bench" if n == 0 else f"bench-{n}", token=token)
        real = node.coap.transport
        if warm_up:  # every device heard once, its first activity turn taken: the steady state
            await feed(node, Feeder(node.coap, warm_up, inflight, devices, WARM_UP_IDS))
            await task.deferLater(reactor, 2.5, lambda: None)
        feeder = Feeder(node.coap, messages, inflight, devices)
        node.coap.transport = feeder
        node.coap.startProtocol()  # the layer takes its transport's socket when it starts
        started_cpu, started = time.process_time(), time.perf_counter()
        feeder.start()
        await feeder.done
        cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
        node.coap.transport = real
        node.coap.startProtocol()
        await node.stopService()
    return cpu / messages * 1e6, messages / wall


async def feed(node, feeder):
    node.coap.transport = feeder
    node.coap.startProtocol()
    feeder.start()
    await feeder.done


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--devices", type=int, default=1, help="requests rotate over this many devices")
    parser.add_argument("--warm-up", type=int, default=0,
                        help="requests before the measured ones (then a pause for one activity turn)")
    parser.add_argument("--store", help="a --store URL (default: a new SQLite file); a Redis or PostgreSQL "
                                        "store should be empty (its own database or key prefix)")
    args = parser.parse_args()

    async def run(reactor):
        results = []
        for number in range(args.rounds):
            cpu, rate = await one_round(reactor, args.messages, args.inflight, args.store, args.devices, args.warm_up)
            results.append(cpu)
            print(f"round {number + 1}: {cpu:6.1f} CPU us per answer, {rate:8.0f} answers/s", flush=True)
        print(f"median {statistics.median(results):.1f} CPU us per answer, best {min(results):.1f}")

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
