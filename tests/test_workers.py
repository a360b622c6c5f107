"""``--workers N``: N node processes on one machine serving the same ports, on a shared store (each test
runs on Redis and on PostgreSQL: the ``shared_store`` fixture)."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request


from tests.blocking import Coap, rest
from tests.coapclient import POST, build
from tests.conftest import ADMIN_KEY, TWISTD

CREATED = 65


def stats_by_worker(server, want, seconds=30):
    """``{pid: stats}`` from fresh HTTP connections (each may land on another worker), until ``want``
    workers answered (they start in a second or two)."""
    seen = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request = urllib.request.Request(server.url + "/api/admin/stats",
                                         headers={"X-Authorization": f"Bearer {ADMIN_KEY}", "Connection": "close"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            stats = json.loads(answer.read())
        seen[stats["process"]["pid"]] = stats
        if len(seen) == want:
            break
    return seen


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_workers_share_the_ports_and_keep_each_peer(twistd, shared_store):
    server = twistd("--store", shared_store, "--workers", "3")
    deadline = time.monotonic() + 20
    while len(children_of(server.proc.pid)) < 2:
        assert time.monotonic() < deadline, server.read_log()
        time.sleep(0.1)
    started = stats_by_worker(server, 3)
    assert len(started) == 3, "every worker takes its share of the ports once ready"
    # each process says which one it is, the same way everywhere
    assert sorted(stats["process"]["worker"] for stats in started.values()) == [0, 1, 2]
    assert {stats["process"]["workers"] for stats in started.values()} == {3}
    log = server.read_log()
    for pid, stats in started.items():
        if stats["process"]["worker"]:
            assert re.search(rf"\[worker {stats['process']['worker']}, pid {pid}\] \[tbcoap\.node#info\] "
                             rf"CoAP listening", log), log
    assert rest(server.url, "POST", "/api/device?accessToken=W1", {"name": "w"})[0] == 200
    clients = [Coap(server.coap_address) for _ in range(60)]
    try:
        for n, client in enumerate(clients):  # 60 source ports, spread over the workers by the kernel
            payload = json.dumps({"ts": 1_700_000_000_000 + n, "values": {"n": n}})
            assert client.request(POST, "/api/v1/W1/telemetry", payload) == CREATED
        # a retransmission (same port, same MID) reaches the same worker: known as a duplicate there
        first = clients[0]
        mid = first.send(POST, "/api/v1/W1/telemetry", b'{"dup":1}')
        assert first.receive(5)[1] == CREATED
        first.sock.sendto(build(POST, "/api/v1/W1/telemetry", b'{"dup":1}', mid=mid, token=b"tk"), first.address)
        assert first.receive(5)[1] == CREATED
    finally:
        for client in clients:
            client.close()
    workers = stats_by_worker(server, 3)
    assert len(workers) == 3, "every worker serves HTTP"
    created = [stats["coap"].get("2.01", 0) for stats in workers.values()]
    assert sum(created) == 61 and sum(1 for c in created if c) >= 2  # CoAP is spread too (the duplicate
    # got the kept answer again, not counted twice)
    assert sum(stats["coap"]["duplicates"] for stats in workers.values()) == 1
    history = rest(server.url, "GET", "/api/plugins/telemetry/DEVICE/"
                   + rest(server.url, "GET", "/api/tenant/devices?deviceName=w")[1]["id"]["id"]
                   + "/values/timeseries?keys=n&startTs=0&endTs=9999999999999&limit=1000")[1]
    assert len(history["n"]) == 60


def test_sigterm_stops_every_worker(twistd, shared_store):
    server = twistd("--store", shared_store, "--workers", "2")
    deadline = time.monotonic() + 20
    while not children_of(server.proc.pid):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (child,) = children_of(server.proc.pid)
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}"):
        assert time.monotonic() < deadline, "a worker outlived the node"
        time.sleep(0.05)
    assert "worker" in server.read_log() and "tbcoap stopped" in server.read_log()


def test_workers_are_refused_with_sqlite(tmp_path):
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "tbcoap", "--data-dir", str(tmp_path), "--admin-key", "k",
                             "--coap-port", "0", "--http-port", "0", "--workers", "2"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert ("--workers needs a store several nodes can share (redis://... or postgresql://...); "
            "the sqlite store is one node's") in result.stdout + result.stderr


def test_workers_share_the_coaps_port(twistd, shared_store, tmp_path):
    """Each DTLS peer stays with one worker (the kernel keeps its datagrams on one socket), so
    cookies, handshakes and sessions work whichever worker a peer lands on."""
    from tests.certs import make_ca, make_cert
    from tests.dtlsclient import DtlsCoap

    cert, key = make_cert(make_ca(), "localhost", ips=["127.0.0.1"]).write(tmp_path, "server")
    server = twistd("--store", shared_store, "--workers", "2", "--dtls-cert", cert, "--dtls-key", key,
                    "--coaps-port", "0", "--coaps-interface", "127.0.0.1")
    address = ("127.0.0.1", int(re.findall(r"CoAPS listening on udp \S+:(\d+)", server.read_log())[-1]))
    workers = stats_by_worker(server, 2)
    assert len(workers) == 2 and all("dtls" in stats for stats in workers.values())
    assert rest(server.url, "POST", "/api/device?accessToken=WD1", {"name": "wd"})[0] == 200
    clients = [DtlsCoap(address) for _ in range(12)]
    try:
        assert [c.request(POST, "/api/v1/WD1/telemetry", b'{"t":1}') for c in clients] == [CREATED] * 12
    finally:
        for client in clients:
            client.close()
    handshakes = 0
    for stats in stats_by_worker(server, 2).values():
        handshakes += stats["dtls"].get("handshakes", 0)
    assert handshakes == 12
