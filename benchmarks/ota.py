"""OTA downloads and uploads: what they cost the server.

1. A package of ``--upload-mb`` (64 MiB) is uploaded over REST, multipart, the client streaming it:
   the server's RSS growth while it is stored (sampled every 20 ms) and the time.
2. ``--devices`` (200) devices of one profile download from a ``--package-mb`` (5 MB) package at
   once, ``--blocks-per-device`` (256) blocks each spread over the package (51,200 requests; 0: the
   whole package each), 1024 bytes per block (CON GETs of /fw/{token} with Block2), interleaved:
   the i-th block of every device before the (i+1)-th of any, ``--inflight`` requests under way;
   every block is checked against the package.  The server's RSS growth, blocks per second, MB/s.

    .venv/bin/python benchmarks/ota.py
    .venv/bin/python benchmarks/ota.py --devices 50 --package-mb 1 --upload-mb 16
    .venv/bin/python benchmarks/ota.py --store redis://127.0.0.1:6379/0?prefix=otabench
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import select
import socket
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import KEY, memory_mb, start_tbcoap  # noqa: E402

BOUNDARY = "otabenchboundary"


class Sampler(threading.Thread):
    """The highest RSS of a process while it runs (every 20 ms)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, memory_mb(self.pid)[0])
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.join()
        return self.peak


def upload(http, package_id, path):
    """POST the file as multipart, streamed from disk; the answer's JSON."""
    size = os.path.getsize(path)
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    conn = http_connection(http)
    conn.putrequest("POST", f"/api/otaPackage/{package_id}?checksumAlgorithm=SHA256")
    conn.putheader("X-Authorization", f"Bearer {KEY}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    conn.send(head)
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            conn.send(piece)
    conn.send(tail)
    response = conn.getresponse()
    body = json.loads(response.read())
    if response.status != 200:
        raise SystemExit(f"upload refused: {response.status} {body}")
    return body


def rest(port, method, path, body=None):
    """``(status, JSON)`` of one REST call."""
    conn = http_connection(port)
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"X-Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    response = conn.getresponse()
    content = response.read()
    conn.close()
    return response.status, json.loads(content) if content else None


def http_connection(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=600)


def make_package(http, profile_id, title, size_bytes, workdir):
    path = os.path.join(workdir, f"{title}.bin")
    with open(path, "wb") as f:
        left = size_bytes
        while left:
            piece = os.urandom(min(left, 1 << 20))
            f.write(piece)
            left -= len(piece)
    status, info = rest(http, "POST", "/api/otaPackage", {"title": title, "version": "1", "type": "FIRMWARE",
                                                         "deviceProfileId": {"id": profile_id}})
    assert status == 200, info
    return info["id"]["id"], path


def option(delta, value):
    def nibble(n):
        return (n, b"") if n < 13 else (13, bytes([n - 13])) if n < 269 else (14, (n - 269).to_bytes(2, "big"))
    d, d_ext = nibble(delta)
    n, n_ext = nibble(len(value))
    return bytes([d << 4 | n]) + d_ext + n_ext + value


def block_request(mid, token, device_token, number):
    """A CON GET /fw/{device_token} with Block2 (number, 0, 1024 bytes)."""
    value = (number << 4) | 6
    block = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big") if value else b""
    return (bytes([0x40 | len(token), 0x01, mid >> 8, mid & 0xFF]) + token + option(11, b"fw")
            + option(0, device_token.encode()) + option(12, block))


def parse(datagram):
    """``(mid, code, payload)`` of an answer."""
    tkl = datagram[0] & 0x0F
    position = 4 + tkl
    while position < len(datagram) and datagram[position] != 0xFF:
        byte = datagram[position]
        delta, length = byte >> 4, byte & 0x0F
        position += 1
        for part in (delta, length):
            if part == 13:
                position += 1
            elif part == 14:
                position += 2
        if length == 13:
            length = datagram[position - 1] + 13
        elif length == 14:
            length = int.from_bytes(datagram[position - 2:position], "big") + 269
        position += length
    payload = datagram[position + 1:] if position < len(datagram) else b""
    return int.from_bytes(datagram[2:4], "big"), datagram[1], payload


def download_all(coap, tokens, data, inflight, per_device, sockets=16):
    """Every device fetches ``per_device`` blocks spread over the package (all of them with 0), interleaved:
    the i-th block of every device before the (i+1)-th of any; ``(blocks, seconds, retransmissions)``.
    An answer later than the server's piggyback window comes as an empty ACK and then a separate CON
    (acknowledged here), matched by its token."""
    blocks = -(-len(data) // 1024)
    per_device = per_device or blocks
    step = max(1, blocks // per_device)
    order = [((i * step + index) % blocks, index) for i in range(per_device) for index in range(len(tokens))]
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(sockets)]
    for s in socks:
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.connect(("127.0.0.1", coap))
    pending = {}  # (sock index, token) -> [number, device index, sent at, datagram, acked]
    by_mid = {}  # (sock index, mid) -> token
    next_item, done, retransmitted, mid = 0, 0, 0, 0
    started = time.perf_counter()
    while done < len(order):
        while next_item < len(order) and len(pending) < inflight:
            number, index = order[next_item]
            mid = (mid + 1) & 0xFFFF
            which = next_item % sockets
            token = next_item.to_bytes(4, "big")
            datagram = block_request(mid, token, tokens[index], number)
            socks[which].send(datagram)
            pending[(which, token)] = [number, index, time.monotonic(), datagram, False]
            by_mid[(which, mid)] = token
            next_item += 1
        readable, _, _ = select.select(socks, [], [], 0.2)
        for s in readable:
            which = socks.index(s)
            while True:
                try:
                    answer = s.recv(2048)
                except BlockingIOError:
                    break
                rmid, code, payload = parse(answer)
                mtype = (answer[0] >> 4) & 3
                if code == 0:  # an empty ACK: the answer follows as a CON
                    token = by_mid.pop((which, rmid), None)
                    if token is not None and (which, token) in pending:
                        pending[(which, token)][4] = True
                    continue
                if mtype == 0:  # a separate answer: acknowledge it
                    s.send(bytes([0x60, 0, answer[2], answer[3]]))
                token = answer[4:4 + (answer[0] & 0x0F)]
                item = pending.pop((which, token), None)
                if item is None:
                    continue
                if code != 0x45:
                    raise SystemExit(f"block {item[0]} of device {item[1]}: code {code >> 5}.{code & 31:02d} {payload!r}")
                number = item[0]
                if payload != data[number * 1024:(number + 1) * 1024]:
                    raise SystemExit(f"block {number} of device {item[1]} differs from the package")
                done += 1
        now = time.monotonic()
        for key, item in pending.items():
            if not item[4] and now - item[2] > 2.0:
                socks[key[0]].send(item[3])
                item[2] = now
                retransmitted += 1
    seconds = time.perf_counter() - started
    for s in socks:
        s.close()
    return len(order), seconds, retransmitted


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--package-mb", type=float, default=5.0)
    parser.add_argument("--upload-mb", type=float, default=64.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--blocks-per-device", type=int, default=256,
                        help="blocks each device fetches, spread over the package (0: all of them)")
    parser.add_argument("--store", default=None, help="--store URL of the node (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        print(f"(the server's log: {workdir}/tbcoap.log)", flush=True)
        extra = ["--store", args.store] if args.store else []
        proc, coap, http = start_tbcoap(workdir, extra, create=False)
        try:
            status, profile = rest(http, "POST", "/api/deviceProfile", {"name": f"ota-{os.getpid()}"})
            assert status == 200, profile
            profile_id = profile["id"]["id"]

            big_id, big_path = make_package(http, profile_id, "big", int(args.upload_mb * 2**20), workdir)
            before = memory_mb(proc.pid)[0]
            sampler = Sampler(proc.pid)
            sampler.start()
            started = time.perf_counter()
            info = upload(http, big_id, big_path)
            seconds = time.perf_counter() - started
            peak = sampler.stop()
            with open(big_path, "rb") as f:
                assert info["checksum"] == hashlib.file_digest(f, "sha256").hexdigest()
            print(f"upload of {args.upload_mb:g} MiB: {seconds:.1f} s ({args.upload_mb / seconds:.1f} MiB/s), "
                  f"RSS {before:.0f} MB before, peak {peak:.0f} MB: +{peak - before:.0f} MB", flush=True)

            small_id, small_path = make_package(http, profile_id, "fw", int(args.package_mb * 1_000_000), workdir)
            upload(http, small_id, small_path)
            with open(small_path, "rb") as f:
                data = f.read()
            tokens = []
            for i in range(args.devices):
                token = f"OTA-BENCH-{i}"
                status, _ = rest(http, "POST", f"/api/device?accessToken={token}",
                                 {"name": f"ota-bench-{i}", "type": profile["name"]})
                assert status == 200
                tokens.append(token)
            profile["firmwareId"] = {"id": small_id}
            status, saved = rest(http, "POST", "/api/deviceProfile", profile)
            assert status == 200, saved
            before = memory_mb(proc.pid)[0]
            sampler = Sampler(proc.pid)
            sampler.start()
            count, seconds, again = download_all(coap, tokens, data, args.inflight, args.blocks_per_device)
            peak = sampler.stop()
            print(f"{args.devices} devices x {len(data) / 1e6:g} MB, {count:,} block requests interleaved "
                  f"({args.inflight} in flight): {seconds:.1f} s, {count / seconds:,.0f} blocks/s, "
                  f"{count * 1024 / seconds / 1e6:.2f} MB/s, {again} retransmitted; "
                  f"RSS {before:.0f} MB before, peak {peak:.0f} MB: +{peak - before:.0f} MB", flush=True)
        finally:
            proc.terminate()
            proc.wait(15)


if __name__ == "__main__":
    main()
