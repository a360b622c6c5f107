"""Durability under load : an acknowledged telemetry message survives SIGKILL.

A real ``twistd -n tbcoap`` takes a closed-loop CoAP load (one confirmable POST
in flight on each of many source ports, every message with its own client
timestamp and value).  While requests are still in flight the server is
SIGKILLed; it is restarted on the same data directory and every message
whose 2.01 Created reached the client must be in the stored history with
its value.  Unacknowledged messages may or may not be there.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ADMIN_KEY

CREATED = 65
TYPE_CON, TYPE_NON, TYPE_ACK = 0, 1, 2
DEVICE_TOKEN = "DURABILITY-TOKEN"


# -- small blocking REST and CoAP helpers ------------------------------------

def rest(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"X-Authorization": f"Bearer {ADMIN_KEY}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def encode_post(path_segments, payload, mid, token):
    """A CON POST datagram, hand-encoded to keep the client cheap (Uri-Path options only)."""
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


def empty_ack(mid):
    return bytes([0x60, 0, mid >> 8, mid & 0xFF])


class Load:
    """Closed-loop CoAP telemetry load: one CON POST outstanding per socket.

    Message ``i`` carries ``{"ts": base + i, "values": {"n": i}}``; a message is
    acknowledged when its 2.01 arrives, either piggybacked (ACK with the
    request's Message ID) or as a separate response (CON/NON with its token).
    """

    def __init__(self, coap_address, sockets):
        self.address = coap_address
        self.path = [b"api", b"v1", DEVICE_TOKEN.encode(), b"telemetry"]
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        for i in range(sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.connect(coap_address)
            s.setblocking(False)
            self.selector.register(s, selectors.EVENT_READ, i)
            self.sockets.append(s)
        self.mids = [0] * sockets
        self.outstanding = [None] * sockets     # socket -> (mid, token, n) of the request in flight
        self.base_ts = int(time.time() * 1000) - 10_000_000  # far from "now": ts = base + n, one per ms
        self.next_n = 0
        self.acked = {}                          # ts -> n
        self.errors = {}                         # code -> count
        self.sent = 0

    def send(self, i):
        n = self.next_n
        self.next_n += 1
        self.mids[i] = (self.mids[i] + 1) & 0xFFFF
        token = n.to_bytes(4, "big")
        payload = json.dumps({"ts": self.base_ts + n, "values": {"n": n}}, separators=(",", ":")).encode()
        self.sockets[i].send(encode_post(self.path, payload, self.mids[i], token))
        self.outstanding[i] = (self.mids[i], token, n)
        self.sent += 1

    def receive(self, i, keep_going):
        """Handle every datagram waiting on socket ``i``; send the next request when one is answered."""
        s = self.sockets[i]
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return
            if len(data) < 4 or self.outstanding[i] is None:
                continue
            kind, tkl, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
            mid = (data[2] << 8) | data[3]
            token = data[4:4 + tkl]
            if kind == TYPE_CON:
                s.send(empty_ack(mid))           # a separate response wants our ACK
            want_mid, want_token, n = self.outstanding[i]
            if code == 0:
                continue                         # empty ACK: the answer comes separately
            if (kind == TYPE_ACK and mid == want_mid) or (kind in (TYPE_CON, TYPE_NON) and token == want_token):
                if token != want_token:
                    continue
                self.outstanding[i] = None
                if code == CREATED:
                    self.acked[self.base_ts + n] = n
                else:
                    self.errors[code] = self.errors.get(code, 0) + 1
                if keep_going:
                    self.send(i)

    def run(self, seconds):
        for i in range(len(self.sockets)):
            self.send(i)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key, _ in self.selector.select(timeout=0.05):
                self.receive(key.data, keep_going=True)

    def in_flight(self):
        return [entry for entry in self.outstanding if entry is not None]

    def drain(self):
        """Answers already sent before the process died (it is dead when this is called)."""
        for i in range(len(self.sockets)):
            self.receive(i, keep_going=False)

    def close(self):
        self.selector.close()
        for s in self.sockets:
            s.close()


def stored_history(base, device_id, start, end):
    status, body = rest(base, "GET", f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"
                                     f"?keys=n&startTs={start}&endTs={end}&limit=100000&orderBy=ASC"
                                     f"&useStrictDataTypes=true")
    assert status == 200, body
    points = (body or {}).get("n", [])
    assert len(points) < 100_000, "history truncated at the limit: send fewer messages"
    return {int(point["ts"]): point["value"] for point in points}


# -- the test ----------------------------------------------------------------

def kill_under_load(twistd, tmp_path, server_args, seconds, sockets, min_acked):
    data_dir = tmp_path / "data"
    server = twistd(*server_args, data_dir=data_dir)
    status, device = rest(server.http_url, "POST", f"/api/device?accessToken={DEVICE_TOKEN}", {"name": "d"})
    assert status == 200, device
    device_id = device["id"]["id"]

    load = Load(server.coap_address, sockets)
    try:
        load.run(seconds)
        acked_before_kill = dict(load.acked)
        in_flight = load.in_flight()
        server.proc.kill()                       # SIGKILL with requests in flight
        server.proc.wait(10)
        assert server.proc.returncode == -signal.SIGKILL
        # The process is dead: whatever is still in our receive buffers was sent
        # before it died, so it is an acknowledgement too (the contract covers it).
        load.drain()
    finally:
        load.close()
    server.stop(signal.SIGKILL)                  # closes its log
    os.replace(server.log_path, server.log_path + ".before-kill")  # so the restart reads only its own ports

    restarted = twistd(*server_args, data_dir=data_dir)
    stored = stored_history(restarted.http_url, device_id, load.base_ts, load.base_ts + load.next_n)

    missing = {ts: n for ts, n in load.acked.items() if ts not in stored}
    wrong = {ts: (n, stored[ts]) for ts, n in load.acked.items() if ts in stored and stored[ts] != n}
    unacked_stored = sum(1 for ts in stored if ts not in load.acked)
    report = (f"sent {load.sent}, acked {len(acked_before_kill)} before kill "
              f"(+{len(load.acked) - len(acked_before_kill)} drained after), in flight at kill {len(in_flight)}, "
              f"stored {len(stored)} (of them unacknowledged {unacked_stored}), errors {load.errors}, "
              f"missing {len(missing)}, wrong value {len(wrong)}")
    print(report)
    assert not load.errors, report
    assert len(acked_before_kill) > min_acked, report
    assert in_flight, report
    assert not missing, f"acknowledged but lost (ts: n): {sorted(missing.items())[:20]}; {report}"
    assert not wrong, f"acknowledged with another value (ts: (sent, stored)): {sorted(wrong.items())[:20]}; {report}"
    assert set(stored) <= {load.base_ts + n for n in range(load.next_n)}, report
    return load, stored


@pytest.mark.parametrize("run", range(3))
def test_acknowledged_telemetry_survives_sigkill_under_load(twistd, tmp_path, run):
    kill_under_load(twistd, tmp_path, (), seconds=2.0, sockets=32, min_acked=1000)


def test_acknowledged_telemetry_survives_sigkill_under_load_sync_full(twistd, tmp_path):
    kill_under_load(twistd, tmp_path, ("--sync", "full"), seconds=2.0, sockets=32, min_acked=200)
