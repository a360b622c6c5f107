"""The attacks of the hardening pass at full scale, against a real ``twistd -n tbcoap``.

    .venv/bin/python benchmarks/attack.py                 # every attack, full scale (a few minutes)
    .venv/bin/python benchmarks/attack.py --only stall,block2 --scale 0.1

Each attack runs against a fresh server while a probe device (its own token, its own address
127.0.0.9) posts telemetry every 50 ms and a REST client asks /api/health every 100 ms.
Printed per attack: the worst probe answer time over CoAP and over REST (a stall shows
there), the server's RSS at the end and its peak, and what the attack itself got.

The attacker holds one device token and sends from 127.0.0.1 (many ports) unless said. The
CoAPS attacks (dtls-*) are described in benchmarks/attack_dtls.py, the REST ones of the second pass
(history-*, backup-unread, many-keys, text-search) in benchmarks/attack_api.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack_dtls  # noqa: E402
import attack_api  # noqa: E402
from run import memory_mb, rest, start_tbcoap  # noqa: E402

KEY = "bench-key"
ATTACKER = "ATTACK_TOKEN"
PROBE = "PROBE_TOKEN"


# -- hand-made CoAP -------------------------------------------------------------------------

def _option(delta, value):
    def nibble(n):
        return (n, b"") if n < 13 else (13, bytes([n - 13])) if n < 269 else (14, struct.pack(">H", n - 269))
    d, d_ext = nibble(delta)
    n, n_ext = nibble(len(value))
    return bytes([d << 4 | n]) + d_ext + n_ext + value


def request(code, path, payload=b"", mid=0, token=b"", observe=None, query=(), block2=None, mtype=0):
    """A CoAP request datagram (options in number order)."""
    options = []
    if observe is not None:
        options.append((6, bytes([observe]) if observe else b""))
    options += [(11, s.encode()) for s in path.strip("/").split("/")]
    options += [(15, q.encode()) for q in query]
    if block2 is not None:
        options.append((23, bytes([block2])))
    out, last = bytearray([0x40 | (mtype << 4) | len(token), code, mid >> 8, mid & 0xFF]) + token, 0
    for number, value in options:
        out += _option(number - last, value)
        last = number
    return bytes(out + (b"\xff" + payload if payload else b""))


def udp(host="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def exchange(sock, server, datagram, timeout=5.0):
    """Send a CON request and wait for the answer with its token (an empty ACK first is skipped, a
    separate CON answer after the piggyback window acknowledged: that is latency, not a failure);
    (code, seconds) or (None, timeout)."""
    token = datagram[4:4 + (datagram[0] & 0x0F)]
    started = time.monotonic()
    sock.sendto(datagram, server)
    try:
        while True:
            sock.settimeout(max(0.001, timeout - (time.monotonic() - started)))
            data = sock.recv(70000)
            if len(data) >= 4 and data[1] and data[4:4 + (data[0] & 0x0F)] == token:
                if data[0] >> 4 & 3 == 0:
                    sock.sendto(bytes([0x60, 0, data[2], data[3]]), server)
                return data[1], time.monotonic() - started
    except socket.timeout:
        return None, timeout


def code(value):
    return f"{value >> 5}.{value & 31:02d}" if value is not None else "none"


# -- the probe --------------------------------------------------------------------------------

class Probe(threading.Thread):
    """A well-behaved device and operator, timing every answer they get."""

    def __init__(self, coap, http):
        super().__init__(daemon=True)
        self.coap, self.http, self.stop, self.worst_coap, self.worst_rest, self.failures = coap, http, False, 0, 0, 0
        self.sock = udp("127.0.0.9")

    def run(self):
        mid, last_rest = 0, 0.0
        while not self.stop:
            mid = (mid + 1) & 0xFFFF
            answer, took = exchange(self.sock, self.coap, request(2, f"/api/v1/{PROBE}/telemetry",
                                                                  b'{"alive":1}', mid, struct.pack(">H", mid)))
            self.worst_coap = max(self.worst_coap, took)
            self.failures += answer != 65
            if time.monotonic() - last_rest > 0.1:
                last_rest = time.monotonic()
                started = time.monotonic()
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.http}/api/health", timeout=10).read()
                except (OSError, urllib.error.HTTPError):
                    self.failures += 1
                self.worst_rest = max(self.worst_rest, time.monotonic() - started)
            time.sleep(0.05)


# -- the attacks ----------------------------------------------------------------------------------

def register(server, path, count, per_socket=200, host="127.0.0.1", sockets=None):
    """``count`` CON registrations (Observe=0) of ``path``, never acknowledged; the sockets and answer codes."""
    sockets = sockets if sockets is not None else []
    codes = {}
    made = 0
    while made < count:
        sock = udp(host)
        sockets.append(sock)
        for n in range(min(per_socket, count - made)):
            sock.sendto(request(1, path, mid=n, token=struct.pack(">I", made + n), observe=0), server)
            if n % 50 == 49:
                time.sleep(0.002)  # pace: a socket buffer holds a few hundred datagrams
        made += per_socket
        sock.settimeout(0.5)
        try:
            for _ in range(per_socket):
                data = sock.recv(70000)
                codes[code(data[1])] = codes.get(code(data[1]), 0) + 1
        except socket.timeout:
            pass
    return sockets, codes


def observed(http):
    stats = rest(http, "GET", "/api/admin/stats")
    return stats["observers"]["attributeObservations"] + stats["observers"]["rpcObservations"]


def attack_stall(ctx, scale):
    """100,000 CON observations of one device's /rpc from 500 ports, then one persistent RPC: all of
    them time out together.  Run with the caps raised, so every relation is really held and ends."""
    count = int(100_000 * scale)
    sockets, codes = register(ctx.coap, f"/api/v1/{ATTACKER}/rpc", count)
    held = observed(ctx.http)
    rest(ctx.http, "POST", f"/api/rpc/oneway/{ctx.attacker}", {"method": "m", "persistent": True, "timeout": 600000})
    started = time.monotonic()
    while observed(ctx.http) and time.monotonic() - started < 120:
        time.sleep(0.2)
    return {"registered": codes, "held": held, "secondsToEndAll": round(time.monotonic() - started, 1)}


attack_stall.args = ["--max-device-observations", "1000000", "--max-peer-observations", "1000000",
                     "--max-observations", "1000000", "--ack-timeout", "0.5", "--max-retransmit", "1"]


def attack_starvation(ctx, scale):
    """The same registrations with the default caps: the attacker is held to its share and
    another device, from another address, still registers."""
    count = int(100_000 * scale)
    sockets, codes = register(ctx.coap, f"/api/v1/{ATTACKER}/rpc", count)
    other = udp("127.0.0.2")
    answer, _ = exchange(other, ctx.coap, request(1, f"/api/v1/{PROBE}/attributes", mid=1, token=b"o", observe=0))
    return {"registered": codes, "held": observed(ctx.http), "otherDeviceRegisters": code(answer)}


def attack_notifications(ctx, scale):
    """10,000 never-acknowledged attribute observations of one device, then 30 shared-attribute
    writes (the caps raised, so all 10,000 hold their notifications)."""
    count = int(10_000 * scale)
    sockets, codes = register(ctx.coap, f"/api/v1/{ATTACKER}/attributes", count)
    for n in range(30):
        rest(ctx.http, "POST", f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/SHARED_SCOPE",
             {"value": n, "text": "x" * 200})
    time.sleep(1)
    stats = rest(ctx.http, "GET", "/api/admin/stats")["coap"]
    return {"registered": codes, "notificationBytes": stats["notificationBytes"]}


attack_notifications.args = ["--max-device-observations", "1000000", "--max-peer-observations", "1000000",
                             "--max-observations", "1000000"]


def attack_block2(ctx, scale):
    """A 2 MB attribute set, then 300 Block2 GETs of it (21-byte requests) from fresh ports."""
    for part in range(3):
        rest(ctx.http, "POST", f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/SHARED_SCOPE",
             {f"p{part}-{n}": "v" * 1000 for n in range(700)})
    count = int(300 * scale)
    answers = {}
    for n in range(count):
        sock = udp()
        answer, _ = exchange(sock, ctx.coap, request(1, f"/api/v1/{ATTACKER}/attributes", mid=n, token=b"b"),
                             timeout=10)
        answers[code(answer)] = answers.get(code(answer), 0) + 1
        sock.close()
    stats = rest(ctx.http, "GET", "/api/admin/stats")["coap"]
    return {"answers": answers, "answerCacheBytes": stats["answerCacheBytes"],
            "answerCacheEvictions": stats["answerCacheEvictions"]}


def attack_dedup(ctx, scale):
    """1,000,000 requests whose answers are 978 bytes, each from a fresh port and MID: every
    answer is kept for duplicate detection until the byte budget says no."""
    rest(ctx.http, "POST", f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/SHARED_SCOPE", {"s": "x" * 940})
    count = int(1_000_000 * scale)
    socks = [udp() for _ in range(256)]
    for sock in socks:
        sock.setblocking(False)
    sent = answered = 0
    path = request(1, f"/api/v1/{ATTACKER}/attributes", mid=0, token=b"d")
    inflight = 0
    while answered < count:
        while inflight < 64 and sent < count:
            sock = socks[sent % 256]
            mid = (sent // 256) & 0xFFFF
            sock.sendto(path[:2] + struct.pack(">H", mid) + path[4:], ctx.coap)
            sent, inflight = sent + 1, inflight + 1
        progressed = False
        for sock in socks:
            try:
                while True:
                    sock.recv(2048)
                    answered, inflight, progressed = answered + 1, inflight - 1, True
            except BlockingIOError:
                pass
        if not progressed:
            time.sleep(0.0005)
            if sent >= count and inflight:  # give up on what was lost
                time.sleep(0.5)
                break
    stats = rest(ctx.http, "GET", "/api/admin/stats")["coap"]
    return {"answered": answered, "dedupEntries": stats["dedupEntries"], "answerCacheBytes": stats["answerCacheBytes"]}


def attack_provision(ctx, scale):
    """20,000 wrong provisioning secrets, each from a new source port."""
    count = int(20_000 * scale)
    body = b'{"deviceName":"x","provisionDeviceKey":"guess","provisionDeviceSecret":"guess"}'
    answers = {}
    started = time.monotonic()
    for n in range(count):
        sock = udp()
        answer, _ = exchange(sock, ctx.coap, request(2, "/api/v1/provision", body, n & 0xFFFF, b"p"), timeout=2)
        answers[code(answer)] = answers.get(code(answer), 0) + 1
        sock.close()
    return {"answers": answers, "seconds": round(time.monotonic() - started, 1)}


def attack_rest(ctx, scale):
    """Large bodies without a key (10 MB, 50 MB chunked), an admin write of 10 MB, a 17,000-character
    URL and a 200 kB header."""
    out = {}

    def raw(name, head, body_chunks=()):
        with socket.create_connection(("127.0.0.1", ctx.http), timeout=30) as sock:
            started = time.monotonic()
            sent = 0
            try:
                sock.sendall(head)
                for chunk in body_chunks:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            answer = b""
            try:
                while data := sock.recv(65536):
                    answer += data
            except OSError:
                pass
        out[name] = {"status": answer.split(b" ", 2)[1].decode() if answer else "closed",
                     "bodyBytesSent": sent, "seconds": round(time.monotonic() - started, 3)}

    def head(path, *headers):
        return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: x", "Connection: close", *headers])
                + "\r\n\r\n").encode()

    raw("10MB without a key", head("/api/device", f"Content-Length: {10 << 20}"), [b"x" * 65536] * 160)
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    raw("50MB chunked without a key", head("/api/device", "Transfer-Encoding: chunked"), [chunk] * 800)
    big = json.dumps({f"k{n}": "v" * 1000 for n in range(10_000)}).encode()
    raw("10MB attributes as admin", head(f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/SHARED_SCOPE",
                                        f"X-Authorization: Bearer {KEY}", f"Content-Length: {len(big)}"), [big])
    raw("17000-character URL", ("GET /api/health?x=" + "a" * 17000 + " HTTP/1.1\r\nHost: x\r\n\r\n").encode())
    raw("200 kB header", ("GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 200_000 + "\r\n\r\n").encode())
    return out


ATTACKS = {"stall": attack_stall, "starvation": attack_starvation, "notifications": attack_notifications,
           "block2": attack_block2, "dedup": attack_dedup, "provision": attack_provision, "rest": attack_rest,
           **attack_dtls.ATTACKS, **attack_api.ATTACKS}


class Context:
    def __init__(self, coap, http, attacker, workdir):
        self.coap, self.http, self.attacker, self.workdir = ("127.0.0.1", coap), http, attacker, workdir
        self.probe_token = PROBE


def run_attack(name, scale):
    attack = ATTACKS[name]
    with tempfile.TemporaryDirectory() as workdir:
        args = getattr(attack, "args", [])
        proc, coap, http = start_tbcoap(workdir, args(workdir) if callable(args) else args)
        try:
            attacker = rest(http, "POST", f"/api/device?accessToken={ATTACKER}", {"name": "attacker"})["id"]["id"]
            rest(http, "POST", f"/api/device?accessToken={PROBE}", {"name": "probe"})
            probe = Probe(("127.0.0.1", coap), http)
            probe.start()
            started = time.monotonic()
            result = attack(Context(coap, http, attacker, workdir), scale)
            elapsed = time.monotonic() - started
            time.sleep(0.5)
            probe.stop = True
            probe.join()
            rss, peak = memory_mb(proc.pid)
            return {"attack": name, "seconds": round(elapsed, 1), "worstCoapAnswer": round(probe.worst_coap, 3),
                    "worstRestAnswer": round(probe.worst_rest, 3), "probeFailures": probe.failures,
                    "rssMB": round(rss), "peakRssMB": round(peak), **result}
        finally:
            proc.terminate()
            proc.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(ATTACKS), help="attacks to run, comma-separated")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full scale (default 1)")
    args = parser.parse_args()
    for name in args.only.split(","):
        print(json.dumps(run_attack(name.strip(), args.scale)), flush=True)


if __name__ == "__main__":
    main()
