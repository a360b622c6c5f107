"""A closed-loop CoAP load generator: N confirmable POSTs in flight over many source ports.

Each request goes out from the next idle socket of a pool larger than the
number in flight, so no source port reuses a Message ID within
EXCHANGE_LIFETIME (247 s) at these rates; a correct server would treat
such a reuse as a duplicate.  Requests are hand-encoded (the client must
be cheaper than the server it measures).
"""

from __future__ import annotations

import array
import collections
import select
import socket
import time


def encode_post(path_segments, payload, mid, token, content_format=None):
    """A CON POST datagram (with a one-byte Content-Format option when given)."""
    out = bytearray([0x40 | len(token), 2, mid >> 8, mid & 0xFF]) + token
    last = 0
    for segment in path_segments:
        delta, length = 11 - last, len(segment)
        last = 11
        out += bytes([(delta << 4) | length]) if length < 13 else bytes([(delta << 4) | 13, length - 13])
        out += segment
    if content_format is not None:  # option 12, after Uri-Path (11)
        out += bytes([0x11, content_format]) if content_format else b"\x10"
    return bytes(out + b"\xff" + payload)


class Load:
    """Result of one run: counts, rate and latency percentiles (ms)."""

    def __init__(self, answered, elapsed, latencies, errors, lost):
        self.answered, self.elapsed, self.errors, self.lost = answered, elapsed, errors, lost
        self.rate = answered / elapsed if elapsed else 0.0
        ordered = sorted(latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")
        self.p50, self.p99 = pick(0.50), pick(0.99)


def run(address, path, payload_for, *, seconds=None, messages=None, inflight=64, ports=256, timeout=5.0,
        on_progress=None, content_format=None):
    """Drive the server until ``seconds`` passed or ``messages`` were answered.

    ``path`` is one path or a list of them (request i goes to ``path[i % len(path)]``: several
    devices).  ``payload_for(i)`` gives the i-th request's payload.  Answers other than
    2.01 count as errors; requests unanswered after ``timeout`` as lost (and
    are sent again from another port with a new Message ID).
    """
    paths = [[s.encode() for s in one.strip("/").split("/")] for one in ([path] if isinstance(path, str) else path)]
    idle = collections.deque()
    poller = select.epoll()
    by_fd = {}
    for _ in range(max(ports, inflight)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(address)
        s.setblocking(False)
        poller.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
        idle.append(s)
    mids = {fd: (fd * 7919) & 0xFFFF for fd in by_fd}
    outstanding = {}  # fd -> (mid, sent_at)
    latencies = array.array("f")
    counter, answered, errors, lost = 0, 0, 0, 0
    start = time.perf_counter()
    end = start + seconds if seconds else float("inf")
    limit = messages or float("inf")

    def send():
        nonlocal counter
        s = idle.popleft()
        fd = s.fileno()
        mid = mids[fd] = (mids[fd] + 1) & 0xFFFF
        s.send(encode_post(paths[counter % len(paths)], payload_for(counter), mid, b"%04x" % (counter & 0xFFFF), content_format))
        outstanding[fd] = (mid, time.perf_counter())
        counter += 1

    for _ in range(inflight):
        send()
    next_check = start + 1.0
    while answered < limit:
        for fd, _ in poller.poll(0.05):
            s = by_fd[fd]
            data = s.recv(2048)
            pending = outstanding.get(fd)
            if pending is None or len(data) < 4 or ((data[2] << 8) | data[3]) != pending[0]:
                continue
            del outstanding[fd]
            latencies.append(time.perf_counter() - pending[1])
            answered += 1
            if data[1] != 65:
                errors += 1
            idle.append(s)
            send()
        now = time.perf_counter()
        if now >= end:
            break
        if now >= next_check:
            next_check = now + 1.0
            for fd, (_, sent_at) in list(outstanding.items()):
                if now - sent_at > timeout:
                    del outstanding[fd]
                    lost += 1
                    idle.append(by_fd[fd])
                    send()
            if on_progress:
                on_progress(answered, now - start)
    elapsed = time.perf_counter() - start
    for s in by_fd.values():
        s.close()
    poller.close()
    return Load(answered, elapsed, latencies, errors, lost)
