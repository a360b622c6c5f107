"""The CoAPS port asks the kernel for a large receive buffer (--coaps-receive-buffer), so that the
datagrams of a session flooding application data wait in the kernel while the reactor drops them,
instead of pushing out other devices' datagrams (benchmarks/attack.py --only dtls-flood)."""

from __future__ import annotations

import socket

import pytest_twisted

from tbcoap.coap.dtls import receive_buffer
from tests.certs import make_ca, make_cert


def system_limit():
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except OSError:
        return None


@pytest_twisted.ensureDeferred
async def test_the_coaps_port_gets_the_receive_buffer_asked(start_node, tmp_path):
    cert, key = make_cert(make_ca(), "localhost", ips=["127.0.0.1"]).write(tmp_path, "server")
    common = ["--dtls-cert", cert, "--dtls-key", key, "--coaps-port", "0", "--coaps-interface", "127.0.0.1"]
    node = await start_node(*common, "--coaps-receive-buffer", "3MiB")
    sock = node.coaps_port.socket
    kernel = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert node.dtls.receive_buffer_size == kernel // 2
    limit = system_limit()
    if limit is not None:  # at least what the system allows any process, the whole 3 MiB where it may
        assert node.dtls.receive_buffer_size >= min(3 << 20, limit)
    # the plain port is left as it was
    assert node.coap_port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < kernel


def test_receive_buffer_answers_what_the_kernel_gives():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        got = receive_buffer(sock, 1 << 20)
        assert got == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        assert got >= min(1 << 20, system_limit() or 0)
    finally:
        sock.close()
