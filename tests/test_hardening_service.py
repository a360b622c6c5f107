"""Hardening seen from outside the device API: REST limits, files and their modes, one node per
data directory, starts that fail cleanly, health that tells a stalled store, logs without tokens."""

import json
import os
import socket
import sqlite3
import stat
import subprocess
import time

import pytest
import pytest_twisted
import treq

from tests.blocking import Coap, rest
from tests.coapclient import POST
from tests.conftest import ADMIN_KEY, TWISTD

CREATED = 65


def raw_http(port, data: bytes, read_timeout=5.0):
    """Send raw bytes to the REST port; (status, JSON body, how many bytes were sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        sent = 0
        try:
            for start in range(0, len(data), 65536):
                sock.sendall(data[start:start + 65536])
                sent = start + 65536
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what it answered is still there to read
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else None
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, json.loads(body) if body else None, min(sent, len(data))


def dechunk(data):
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        size = int(size, 16)
        if not size:
            return out
        out, data = out + data[:size], data[size + 2:]
    return out


def request(method, path, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- REST limits ------------------------------------------------------------------

def test_a_large_body_without_a_key_is_refused_from_its_headers(server):
    port = server.ports["HTTP"]
    head = request("POST", "/api/device", [f"Content-Length: {10 << 20}"])
    status, body, _ = raw_http(port, head)  # only the headers are sent: the answer comes at once
    assert status == 413 and body == {"status": 413, "message": "body over 65536 bytes"}


def test_a_chunked_body_without_a_key_stops_at_64_kib(server):
    port = server.ports["HTTP"]
    chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
    data = request("POST", "/api/device", ["Transfer-Encoding: chunked"]) + chunk * 320  # 5 MiB
    status, body, _ = raw_http(port, data)
    assert status == 413 and "65536" in body["message"]


def test_the_admin_key_may_send_up_to_max_rest_body(server):
    port = server.ports["HTTP"]
    auth = f"X-Authorization: Bearer {ADMIN_KEY}"
    big = json.dumps({"name": "x" * (2 << 20)}).encode()
    status, body, _ = raw_http(port, request("POST", "/api/device", [auth, f"Content-Length: {len(big)}"], big))
    assert status == 413 and body["message"] == f"body over {1 << 20} bytes"
    fits = json.dumps({"name": "n" * 100_000}).encode()  # over 64 KiB, under 1 MiB: read, then judged
    status, body, _ = raw_http(port, request("POST", "/api/device", [auth, f"Content-Length: {len(fits)}"], fits))
    assert status == 400 and "name" in body["message"]


def test_long_urls_and_headers_get_414_and_431(server):
    port = server.ports["HTTP"]
    status, body, _ = raw_http(port, request("GET", "/api/health?x=" + "a" * 17000))
    assert status == 414 and body["status"] == 414
    status, body, _ = raw_http(port, request("GET", "/api/health", ["X-Big: " + "b" * 200_000]))
    assert status == 431 and body["status"] == 431
    status, body, _ = raw_http(port, request("GET", "/api/health", [f"X-H{n}: " + "c" * 1000 for n in range(20)]))
    assert status == 431
    status, body, _ = raw_http(port, request("GET", "/api/health?x=" + "a" * 7000))  # under both: fine
    assert status == 200
    _, stats = rest(server.url, "GET", "/api/admin/stats")
    assert stats["http"]["refused"]["414"] >= 1 and stats["http"]["refused"]["431"] >= 2


# -- files, one node per data directory, failed starts ---------------------------------

def test_store_files_and_data_directory_are_private_whatever_the_umask(twistd, tmp_path):
    data = tmp_path / "run" / "data"  # created by the node (the test's log goes in "run")
    old = os.umask(0o022)
    try:
        server = twistd("--data-dir", str(data), data_dir=tmp_path / "run")
    finally:
        os.umask(old)
    client = Coap(server.coap_address)
    try:
        rest(server.url, "POST", "/api/device?accessToken=T1", {"name": "d"})
        assert client.request(POST, "/api/v1/T1/telemetry", b'{"t":1}') == CREATED
    finally:
        client.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("tbcoap.sqlite3", "tbcoap.sqlite3-wal", "tbcoap.sqlite3-shm", "tbcoap.lock"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


def test_a_0644_database_from_before_is_made_private(twistd, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "tbcoap.sqlite3").close()
    os.chmod(data / "tbcoap.sqlite3", 0o644)
    twistd(data_dir=data)
    assert stat.S_IMODE((data / "tbcoap.sqlite3").stat().st_mode) == 0o600


def test_a_second_node_on_one_data_directory_refuses_and_leaves_no_pidfile(twistd, tmp_path):
    first = twistd(data_dir=tmp_path / "data")
    pidfile = tmp_path / "second.pid"
    result = subprocess.run([TWISTD, "-n", f"--pidfile={pidfile}", "tbcoap", "--data-dir", str(tmp_path / "data"),
                             "--admin-key", "k", "--coap-port", "0", "--http-port", "0"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert f"another tbcoap node (pid {first.proc.pid}) is using the data directory" in result.stdout
    assert not pidfile.exists()
    assert rest(first.url, "GET", "/api/health", key=None)[0] == 200  # the first goes on


def test_a_failed_start_leaves_no_pidfile(tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    pidfile = tmp_path / "twistd.pid"
    try:
        result = subprocess.run([TWISTD, "-n", f"--pidfile={pidfile}", "tbcoap", "--data-dir", str(tmp_path / "d"),
                                 "--admin-key", "k", "--coap-port", "0", "--http-interface", "127.0.0.1",
                                 "--http-port", str(taken.getsockname()[1])],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        taken.close()
    assert result.returncode == 1 and "cannot listen for HTTP" in result.stdout
    assert not pidfile.exists()


def test_admin_key_from_a_file(launch, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("file-key-123\n")
    server = launch("--admin-key-file", str(key_file), key=None)
    assert rest(server.url, "GET", "/api/tenant/devices?pageSize=1", key="file-key-123")[0] == 200
    assert rest(server.url, "GET", "/api/tenant/devices?pageSize=1", key=ADMIN_KEY)[0] == 401
    assert "file-key-123" not in " ".join(server.command()) and "file-key-123" not in server.read_log()


# -- health, logs ---------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_health_is_503_while_writes_cannot_complete(start_node, monkeypatch):
    import tbcoap_sqlite.database

    monkeypatch.setattr(tbcoap_sqlite.database, "STALLED_WRITE", 0.5)
    node = await start_node()
    base = f"http://127.0.0.1:{node.http_address[1]}"
    device, _ = await node.core.devices.create("d", token="T")
    blocker = sqlite3.connect(node.store.path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        pending = node.core.telemetry.upload(device, b'{"t":1}')
        deadline = time.monotonic() + 5
        while True:
            response = await treq.get(base + "/api/health")
            body = json.loads(await response.content())
            if response.code == 503 or time.monotonic() > deadline:
                break
        assert response.code == 503 and body["down"] == ["store"] and "waited" in body["details"]["store"]
    finally:
        blocker.rollback()
        blocker.close()
    await pending  # the write completes once the lock is gone, and health recovers
    response = await treq.get(base + "/api/health")
    assert response.code == 200


def test_a_token_with_a_hash_sign_is_masked_whole(twistd, tmp_path):
    server = twistd(data_dir=tmp_path / "data")
    status, _ = rest(server.url, "POST", "/api/device?accessToken=ab%23SECRET-TAIL", {"name": "hash"})
    assert status == 200
    with socket.create_connection(("127.0.0.1", server.ports["HTTP"])) as sock:  # "#" sent raw, not encoded
        sock.sendall(request("GET", "/api/tenant/devices?pageSize=1&accessToken=cd#OTHER-TAIL",
                             [f"X-Authorization: Bearer {ADMIN_KEY}"]))
        while sock.recv(65536):
            pass
    server.stop()
    log = server.read_log()
    assert "SECRET-TAIL" not in log and "OTHER-TAIL" not in log and "accessToken=" in log


@pytest.mark.parametrize("owner", ["free", "other"])
@pytest_twisted.ensureDeferred
async def test_releasing_a_device_a_customer_does_not_own_says_why(node, rest, owner):
    from tests.conftest import Rest

    customers = []
    for title in ("ACME", "Other"):
        status, made = await rest.post("/api/customer", {"title": title})
        customers.append((made["id"]["id"], Rest(rest.base, made["apiKey"])))
    (_, acme), (other_id, _) = customers
    device, _ = await node.core.devices.create("dev")
    if owner == "other":
        await node.core.store.set_device_customer(device.id, other_id, None)
    status, body = await acme.delete("/api/customer/device/dev/claim")
    expected = "the device is not claimed" if owner == "free" else "the device belongs to another customer"
    assert (status, body["message"]) == (403, expected)
