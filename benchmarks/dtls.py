"""CoAPS beside plain CoAP, one server, one run.

    .venv/bin/python benchmarks/dtls.py                  # 10 s per measurement, 10,000 idle sessions
    .venv/bin/python benchmarks/dtls.py --seconds 5 --sessions 2000

Starts ``twistd -n tbcoap`` with a server certificate (ECDSA P-256), the handshake and session
rate limits off (this measures capacity; benchmarks/attack.py measures the limits), and measures,
each from a generator process of its own:

1. full DTLS handshakes per second (cookie exchange included), one after another;
2. telemetry messages per second and latency with the same closed-loop generator over plain CoAP
   sockets and over established DTLS sessions (64 of each, one CON POST in flight per socket);
3. the server's memory per idle session: ``--sessions`` devices (100 per source address
   127.0.1.x, each from its own port) handshake, post one telemetry message and go quiet; after
   3 s (past the 2 s after which a session counts as idle) the server's RSS, less its RSS
   before, divided by the sessions it holds;
4. a flood of ClientHellos without cookies (what spoofed addresses send): the rate answered and
   the server's RSS before and after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import select
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from loadgen import encode_post  # noqa: E402
from run import TOKEN, memory_mb, rest, start_tbcoap  # noqa: E402

from tests.certs import make_ca, make_cert  # noqa: E402
from tests.dtlsclient import DtlsSocket  # noqa: E402

PAYLOAD = b'{"temperature":21.5,"humidity":40,"ok":true}'


def coaps_port(workdir):
    with open(os.path.join(workdir, "tbcoap.log"), encoding="utf-8", errors="replace") as f:
        return int(re.findall(r"CoAPS listening on udp \S+:(\d+)", f.read())[-1])


def handshakes(address, seconds, queue):
    done, failed, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session = DtlsSocket(address)
        try:
            session.handshake(timeout=5)
            done += 1
        except Exception:
            failed += 1
        session.close()
    queue.put((done / (time.perf_counter() - started), failed))


class Plain:
    """A plain UDP socket with the DtlsSocket calls the driver uses."""

    def __init__(self, address):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.connect(address)

    def send(self, data):
        self.udp.send(data)

    def receive(self):
        return self.udp.recv(2048)


class Secure:
    def __init__(self, address):
        self.session = DtlsSocket(address).handshake()
        self.udp = self.session.udp

    def send(self, data):
        self.session.sendto(data, None)

    def receive(self):
        self.session.conn.bio_write(self.udp.recv(65536))
        try:
            return self.session.conn.recv(65536)
        except Exception:
            return b""


def drive(kind, address, sessions, seconds, queue):
    """Closed loop: each socket keeps one CON POST in flight; (msgs/s, p50 ms, p99 ms, errors)."""
    links = [(Secure if kind == "dtls" else Plain)(address) for _ in range(sessions)]
    by_fd = {link.udp.fileno(): link for link in links}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    segments = [b"api", b"v1", TOKEN.encode(), b"telemetry"]
    mids, sent_at, latencies, errors = {fd: fd * 97 & 0xFFFF for fd in by_fd}, {}, [], 0

    def send(fd):
        mids[fd] = (mids[fd] + 1) & 0xFFFF
        by_fd[fd].send(encode_post(segments, PAYLOAD, mids[fd], b"%04x" % mids[fd]))
        sent_at[fd] = time.perf_counter()

    for fd in by_fd:
        send(fd)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for fd, _ in poller.poll(0.1):
            data = by_fd[fd].receive()
            if len(data) < 4 or ((data[2] << 8) | data[3]) != mids[fd]:
                continue
            latencies.append(time.perf_counter() - sent_at[fd])
            errors += data[1] != 65
            send(fd)
    elapsed = time.perf_counter() - started
    for link in links:
        if kind == "dtls":
            link.session.close()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000 if latencies else 0.0
    queue.put((len(latencies) / elapsed, pick(0.5), pick(0.99), errors))


def open_sessions(address, count, queue):
    """``count`` sessions, 100 per source address 127.0.1.x, each from a port of its own: a
    handshake, one CON POST, then the client forgets its side (no close_notify), so the server
    holds ``count`` idle sessions and this process nothing; (sessions opened, seconds)."""
    segments = [b"api", b"v1", TOKEN.encode(), b"telemetry"]
    started, opened = time.perf_counter(), 0
    for n in range(count):
        session = DtlsSocket(address, source=f"127.0.1.{1 + n // 100}", port=41000 + n % 100)
        try:
            session.handshake(timeout=10)
            session.settimeout(5)
            session.sendto(encode_post(segments, PAYLOAD, n & 0xFFFF, b"%04x" % (n & 0xFFFF)), None)
            session.recvfrom(2048)
            opened += 1
        except Exception as exc:  # counted below: the server holds fewer
            print(f"session {n}: {exc!r}", file=sys.stderr)
        session.drop()
    queue.put((opened, time.perf_counter() - started))


def hello_flood(address, seconds, queue):
    from OpenSSL import SSL

    conn = SSL.Connection(SSL.Context(SSL.DTLS_CLIENT_METHOD), None)
    conn.set_connect_state()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    hello = conn.bio_read(65536)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
    for s in socks:
        s.setblocking(False)
    sent, answered, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for s in socks:
            s.sendto(hello, address)
            sent += 1
        for s in socks:
            try:
                while True:
                    s.recv(2048)
                    answered += 1
            except BlockingIOError:
                pass
        time.sleep(0.001)
    time.sleep(0.5)
    for s in socks:
        try:
            while True:
                s.recv(2048)
                answered += 1
        except BlockingIOError:
            pass
        s.close()
    queue.put((sent, answered, time.perf_counter() - started))


def in_process(target, *args):
    """``target(*args, queue)`` in a process of its own; what it put on the queue."""
    import queue as queues

    queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=target, args=(*args, queue))
    child.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except queues.Empty:
            if not child.is_alive():
                raise SystemExit(f"{target.__name__} failed (exit code {child.exitcode}); see above")
    child.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=10_000, help="idle sessions for the memory figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        ca = make_ca()
        folder = __import__("pathlib").Path(workdir)
        cert, key = make_cert(ca, "localhost", dns=["localhost"], ips=["127.0.0.1"]).write(folder, "server")
        proc, coap, http = start_tbcoap(workdir, ["--dtls-cert", cert, "--dtls-key", key, "--coaps-port", "0",
                                                  "--coaps-interface", "127.0.0.1", "--dtls-handshake-rate", "off",
                                                  "--dtls-session-rate", "off"])
        plain, secure = ("127.0.0.1", coap), ("127.0.0.1", coaps_port(workdir))
        try:
            rate, failed = in_process(handshakes, secure, args.seconds)
            print(f"full handshakes (cookie exchange, ECDSA P-256): {rate:,.0f}/s, {failed} failed", flush=True)
            print(f"{'run':34} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
            for kind, address in (("plain CoAP, 64 sockets", plain), ("CoAPS, 64 DTLS sessions", secure),
                                  ("plain CoAP again", plain)):
                rate, p50, p99, errors = in_process(drive, "dtls" if "DTLS" in kind else "plain", address, 64,
                                                    args.seconds)
                print(f"{kind:34} {rate:8,.0f} {p50:7.2f} {p99:7.2f} {errors:6}", flush=True)
            time.sleep(1)
            before = memory_mb(proc.pid)[0]
            opened, took = in_process(open_sessions, secure, args.sessions)
            time.sleep(3)  # every session idle (no datagram for 2 s)
            during = memory_mb(proc.pid)[0]
            held = rest(http, "GET", "/api/admin/stats")["dtls"]["sessions"]
            print(f"{held:,} idle sessions ({opened:,} opened in {took:.0f} s): RSS {before:.1f} -> {during:.1f} MB, "
                  f"{(during - before) * 1024 / max(held, 1):.1f} KB per session", flush=True)
            before = memory_mb(proc.pid)[0]
            sent, answered, elapsed = in_process(hello_flood, secure, args.seconds)
            after, peak = memory_mb(proc.pid)
            print(f"spoofed-hello flood: {sent:,} hellos in {elapsed:.1f} s, {answered:,} HelloVerifyRequests "
                  f"({answered / elapsed:,.0f}/s); RSS {before:.1f} -> {after:.1f} MB", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
