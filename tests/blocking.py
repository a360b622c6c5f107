"""Blocking clients for tests that drive a ``twistd`` subprocess: CoAP on a plain UDP socket,
REST with urllib."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request

from txthings import coap as tx

from tests.coapclient import ACK, CON, build
from tests.conftest import ADMIN_KEY

CON_TYPE = 0


def rest(base, method, path, body=None, key=ADMIN_KEY, headers=None):
    """``(status, parsed JSON or raw bytes)`` of one REST call."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if key:
        request.add_header("X-Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, content = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, content = exc.code, exc.read()
    try:
        return status, json.loads(content) if content else None
    except ValueError:
        return status, content


class Coap:
    """A blocking CoAP client on a plain UDP socket."""

    def __init__(self, address):
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.mid = 1000

    def close(self):
        self.sock.close()

    def send(self, method, path, payload=b"", token=b"tk", mid=None, options=()):
        """Send a CON request (``options``: more ``(number, bytes)``); its MID."""
        if mid is None:
            self.mid = (self.mid + 1) & 0xFFFF
            mid = self.mid
        if isinstance(payload, str):
            payload = payload.encode()
        self.sock.sendto(build(method, path, payload, mid=mid, token=token, extra_options=options), self.address)
        return mid

    def receive(self, timeout):
        """``(type, code, mid, token, payload)`` of the next datagram, or None after ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(70000)
        except socket.timeout:
            return None
        tkl = data[0] & 0x0F
        payload = data.partition(b"\xff")[2] if b"\xff" in data[4 + tkl:] else b""
        return (data[0] >> 4) & 3, data[1], int.from_bytes(data[2:4], "big"), data[4:4 + tkl], payload

    def request(self, method, path, payload=b"", token=b"tk", timeout=10.0, options=()):
        """A CON request answered (retransmitted each second with the same MID); the response code."""
        return self.exchange(method, path, payload, token, timeout, options)[0]

    def exchange(self, method, path, payload=b"", token=b"tk", timeout=10.0, options=()):
        """As ``request``; ``(code, payload)`` of the answer."""
        mid = self.send(method, path, payload, token, options=options)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.receive(1.0)
            if answer is None:
                self.send(method, path, payload, token, mid=mid, options=options)
                continue
            mtype, code, rmid, rtoken, body = answer
            if code == 0 or rtoken != token:
                continue  # an empty ACK, or an old answer
            if mtype == CON_TYPE:
                self.sock.sendto(bytes([0x60, 0, *rmid.to_bytes(2, "big")]), self.address)
            elif rmid != mid:
                continue
            return code, body
        raise AssertionError(f"no answer to {path}")


class UdpDevice:
    """A device's side over a blocking UDP socket: datagrams out, decoded messages in (kept in an
    inbox until a ``receive`` asks for them), empty ACKs for CON messages."""

    def __init__(self, coap_address, token):
        self.address, self.token = coap_address, token
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.mid = int.from_bytes(os.urandom(2), "big")
        self.inbox = []

    def close(self):
        self.sock.close()

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def send(self, datagram):
        self.sock.sendto(datagram, self.address)

    def receive(self, match, timeout=10.0):
        """The first message (already received or arriving within ``timeout``) that ``match`` accepts."""
        for message in self.inbox:
            if match(message):
                self.inbox.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                break
            message = tx.Message.decode(data, addr)
            if match(message):
                return message
            self.inbox.append(message)
        raise AssertionError(f"nothing matching arrived in {timeout} s; got {self.inbox!r}")

    def ack(self, message):
        """Acknowledge ``message`` if it is a CON."""
        if message.mtype == CON:
            self.send(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
