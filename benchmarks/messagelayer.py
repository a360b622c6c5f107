"""The message layer alone, in one process: what one CON telemetry POST costs it, from the datagram
to the piggybacked 2.01 (decode, duplicate check, Deferred answer, encode, write), without the
device API, the store or the network.

    .venv/bin/python benchmarks/messagelayer.py           # best of 5 rounds of 100,000
    .venv/bin/python benchmarks/messagelayer.py --count   # Python calls and bytecodes per datagram

Time is the process's CPU time, so a busy machine disturbs it less than wall time; the best round
is printed.  ``--count`` traces 2,000 datagrams and counts the Python function calls and bytecode
instructions each costs: the same on any machine, so two commits compare exactly even when timings
are noise.  Answers are Deferreds fired 64 at a time, as the store's group commits fire them.
To compare two commits, run this file alternately with each checkout's own venv.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

from twisted.internet import defer, task
from txthings import coap

from tbcoap.coap.messagelayer import MessageLayer

PATH = (b"api", b"v1", b"BENCH_TOKEN_0123456789", b"telemetry")


class NullTransport:
    def write(self, data, address):
        pass


def datagrams(count):
    """``count`` CON POSTs from 256 source ports, no (port, MID) twice."""
    out = []
    for i in range(count):
        message = coap.Message(mtype=coap.CON, mid=(i >> 8) & 0xFFFF, code=coap.POST, token=b"%04x" % (i & 0xFFFF),
                               payload=b'{"temperature":21.5,"humidity":%d,"ok":true}' % (i % 100))
        for segment in PATH:
            message.opt.addOption(coap.StringOption(coap.URI_PATH, segment))
        out.append((message.encode(), ("127.0.0.1", 20000 + (i & 255) + 256 * (i >> 24))))
    return out


def one_round(data):
    """Datagrams answered per CPU second."""
    waiting = []

    def handler(request):
        answer = defer.Deferred()
        waiting.append(answer)
        return answer

    layer = MessageLayer(handler, clock=task.Clock())
    layer.transport = NullTransport()
    gc.collect()
    started = time.process_time()
    for datagram, remote in data:
        layer.datagramReceived(datagram, remote)
        if len(waiting) == 64:
            for answer in waiting:
                answer.callback(coap.Message(code=coap.CREATED))
            waiting.clear()
    elapsed = time.process_time() - started
    answered = layer.counters[coap.CREATED]
    if answered != len(data) - len(waiting):
        raise SystemExit(f"only {answered} of {len(data)} answered")
    return answered / elapsed


def count(data):
    """Python calls and bytecode instructions per datagram over ``data`` (traced)."""
    counts = {"calls": 0, "bytecodes": 0}

    def local(frame, event, arg):
        if event == "opcode":
            counts["bytecodes"] += 1
        return local

    def on_call(frame, event, arg):
        frame.f_trace_opcodes = True
        counts["calls"] += 1
        return local

    sys.settrace(on_call)
    try:
        one_round(data)
    finally:
        sys.settrace(None)
    return {name: value / len(data) for name, value in counts.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000, help="datagrams per round (default 100,000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", action="store_true", help="count Python calls and bytecodes per datagram")
    args = parser.parse_args()
    data = datagrams(args.messages)
    gc.freeze()
    if args.count:
        one_round(data[:1000])  # imports and first-call work out of the count
        counts = count(data[1000:3000])
        print(f"{counts['calls']:.2f} Python calls and {counts['bytecodes']:.2f} bytecodes per datagram")
        return
    rates = [one_round(data) for _ in range(args.rounds)]
    print(f"{max(rates):,.0f} datagrams per CPU second (best of {args.rounds}; "
          f"all: {', '.join(f'{rate:,.0f}' for rate in rates)})")


if __name__ == "__main__":
    main()
