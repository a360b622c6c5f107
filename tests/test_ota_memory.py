"""What OTA costs the server, measured on a live ``twistd -n tbcoap``: a 32 MiB upload streamed to the
store, and 100 devices downloading interleaved blocks of a 2 MB package at once (every block checked).
Neither holds a package in memory: the growth stays far below the package sizes."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "benchmarks"))
import ota as bench  # noqa: E402  (benchmarks/ota.py: its streaming upload and interleaved downloader)

from tests.conftest import LOOPBACK_PORTS, Server  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def ota_server(tmp_path):
    server = Server(tmp_path / "data", *LOOPBACK_PORTS, "--admin-key", bench.KEY).start()
    yield server
    server.stop()


def test_streamed_upload_and_concurrent_downloads_hold_no_package(ota_server, tmp_path):
    http, coap = ota_server.ports["HTTP"], ota_server.ports["CoAP"]
    status, profile = bench.rest(http, "POST", "/api/deviceProfile", {"name": "ota-memory"})
    assert status == 200
    big_id, big_path = bench.make_package(http, profile["id"]["id"], "big", 32 * 2**20, str(tmp_path))
    sampler = bench.Sampler(ota_server.proc.pid)
    before = rss_mb(ota_server.proc.pid)
    sampler.start()
    info = bench.upload(http, big_id, big_path)
    grown = sampler.stop() - before
    with open(big_path, "rb") as f:
        assert info["checksum"] == hashlib.file_digest(f, "sha256").hexdigest()
    assert grown < 16, f"a 32 MiB upload grew the server by {grown:.0f} MB"

    small_id, small_path = bench.make_package(http, profile["id"]["id"], "fw", 2_000_000, str(tmp_path))
    bench.upload(http, small_id, small_path)
    with open(small_path, "rb") as f:
        data = f.read()
    tokens = []
    for i in range(100):
        status, _ = bench.rest(http, "POST", f"/api/device?accessToken=MEM-{i}", {"name": f"mem-{i}",
                                                                                   "type": "ota-memory"})
        assert status == 200
        tokens.append(f"MEM-{i}")
    profile["firmwareId"] = {"id": small_id}
    assert bench.rest(http, "POST", "/api/deviceProfile", profile)[0] == 200
    sampler = bench.Sampler(ota_server.proc.pid)
    before = rss_mb(ota_server.proc.pid)
    sampler.start()
    count, seconds, _ = bench.download_all(coap, tokens, data, inflight=64, per_device=64)
    grown = sampler.stop() - before
    assert count == 6400
    # 6,400 answers of ~1.1 KB are kept for duplicates (7 MB); 100 whole packages would be 200 MB
    assert grown < 30, f"100 concurrent downloaders grew the server by {grown:.0f} MB"


def test_an_upload_cut_short_leaves_no_chunks(ota_server, tmp_path):
    import socket
    import sqlite3
    import time

    http = ota_server.ports["HTTP"]
    status, profile = bench.rest(http, "POST", "/api/deviceProfile", {"name": "ota-cut"})
    status, info = bench.rest(http, "POST", "/api/otaPackage", {"title": "cut", "version": "1", "type": "FIRMWARE",
                                                               "deviceProfileId": {"id": profile["id"]["id"]}})
    head = (f"POST /api/otaPackage/{info['id']['id']} HTTP/1.1\r\nHost: x\r\nX-Authorization: Bearer {bench.KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={bench.BOUNDARY}\r\nContent-Length: 4000000\r\n\r\n"
            f"--{bench.BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n").encode()
    database = os.path.join(ota_server.data_dir, "tbcoap.sqlite3")

    def chunks():
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM ota_chunks").fetchone()[0]

    with socket.create_connection(("127.0.0.1", http)) as sock:
        sock.sendall(head + os.urandom(1_000_000))
        deadline = time.monotonic() + 10
        while not chunks():  # the first chunks are stored while the body arrives
            assert time.monotonic() < deadline
            time.sleep(0.05)

    deadline = time.monotonic() + 10
    while chunks() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert chunks() == 0
    status, again = bench.rest(http, "GET", f"/api/otaPackage/info/{info['id']['id']}")
    assert again["hasData"] is False
