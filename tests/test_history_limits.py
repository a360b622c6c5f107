"""History and aggregation answers bounded in total, read in chunks and written as the client reads
them; the history gate fair between API keys; answers whose client stops reading ended after the
write timeout (backups too)."""

from __future__ import annotations

import json
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tbcoap.services import history
from tbcoap.services.history import HistoryGate
from tests.coapclient import POST, code_text, open_client

BASE = 1_700_000_000_000


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def series_url(device, query):
    return f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries?{query}"


async def store_points(node, device, keys, count, step=1000):
    """``count`` points of each key, written straight through the store (fast, and exactly known)."""
    store = node.core.store
    for start in range(0, count, 20_000):
        entries = [(BASE + i * step, key, i) for i in range(start, min(count, start + 20_000)) for key in keys]
        await store.save_telemetry(device["id"]["id"], entries)


# -- bounded in total, across keys ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_history_that_could_pass_the_total_is_400_before_anything_is_read(node, rest, device):
    await store_points(node, device, [f"k{n}" for n in range(20)], 10)
    # without keys every key of the device counts: 20 keys x 10,000 is 200,000 points
    status, body = await rest.get(series_url(device, "startTs=0&endTs=9999999999999&limit=10000"))
    assert status == 400 and "at most 100,000 per answer" in body["message"], body
    status, body = await rest.get(series_url(device, "keys=k1,k2&startTs=0&endTs=9999999999999&limit=50001"))
    assert status == 400 and "100,002" in body["message"]
    status, body = await rest.get(series_url(device, "startTs=0&endTs=9999999999999&limit=5000"))
    assert status == 200 and len(body) == 20 and all(len(points) == 10 for points in body.values())
    # aggregation: keys x buckets (or limit, when smaller) count the same way
    status, body = await rest.get(series_url(device, f"startTs={BASE}&endTs={BASE + 10_000_000}&interval=1000"
                                                     "&agg=AVG&limit=10000"))
    assert status == 400 and "at most 100,000 per answer" in body["message"]


@pytest_twisted.ensureDeferred
async def test_history_is_read_in_chunks_and_equals_one_read(node, rest, device):
    """25,000 points of one key and 3 of another: the answer is the store's whole answer, in order,
    asked for in chunks of at most 10,000 points."""
    await store_points(node, device, ["big"], 25_000)
    await store_points(node, device, ["small"], 3)
    store = node.core.store
    asked, read = [], store.telemetry_history

    def counting(device_id, keys, start, end, limit, descending):
        asked.append((keys, limit))
        return read(device_id, keys, start, end, limit, descending)

    store.telemetry_history = counting
    try:
        for order in ("ASC", "DESC"):
            asked.clear()
            status, body = await rest.get(series_url(device, f"startTs=0&endTs=9999999999999&limit=30000"
                                                             f"&orderBy={order}&useStrictDataTypes=true"))
            assert status == 200
            expected = list(range(25_000)) if order == "ASC" else list(range(24_999, -1, -1))
            assert [p["value"] for p in body["big"]] == expected
            assert [p["ts"] for p in body["big"]] == [BASE + i * 1000 for i in expected]
            assert len(body["small"]) == 3
            assert max(limit for _, limit in asked) <= history.CHUNK_POINTS
            assert sum(1 for keys, _ in asked if keys == ["big"]) == 3
    finally:
        store.telemetry_history = read


@pytest_twisted.ensureDeferred
async def test_aggregation_in_windows_equals_the_store_in_one_call(node, rest, device):
    """A range of 30,000 buckets read in windows of 10,000 gives what one store call gives."""
    await store_points(node, device, ["t"], 3000, step=7_000)
    end = BASE + 30_000 * 1000
    for order, descending in (("ASC", False), ("DESC", True)):
        for agg in ("AVG", "COUNT", "MAX"):
            status, body = await rest.get(series_url(device, f"keys=t&startTs={BASE}&endTs={end}&interval=1000"
                                                             f"&agg={agg}&limit=3000&orderBy={order}"
                                                             "&useStrictDataTypes=true"))
            assert status == 200
            whole = await node.core.store.telemetry_aggregate(device["id"]["id"], ["t"], BASE, end, 1000, agg,
                                                              3000, descending)
            assert [(p["ts"], p["value"]) for p in body["t"]] == [(ts, v) for ts, v in whole["t"]]


@pytest_twisted.ensureDeferred
async def test_a_devices_probe_is_answered_while_a_full_answer_is_built(node, rest, device):
    """The largest answer there is (100,000 points) leaves devices answered within the piggyback
    window: the node serves them between chunks."""
    await store_points(node, device, [f"k{n}" for n in range(10)], 10_000)
    status, _ = await rest.post("/api/device?accessToken=PROBE", {"name": "probe"})
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    reading = defer.ensureDeferred(rest.get(series_url(device, "startTs=0&endTs=9999999999999&limit=10000")))
    worst = 0.0
    try:
        while not reading.called:
            began = time.perf_counter()
            answer = await client.request(POST, "/api/v1/PROBE/telemetry", b'{"probe":1}')
            worst = max(worst, time.perf_counter() - began)
            assert code_text(answer.code) == "2.01"
        status, body = await reading
        assert status == 200 and sum(len(points) for points in body.values()) == 100_000
        assert worst < 0.5, f"a device waited {worst:.2f} s"
    finally:
        await client.port.stopListening()


# -- the gate ---------------------------------------------------------------------------------

def test_the_gate_takes_turns_between_callers():
    gate = HistoryGate(running=1)
    held, order = {}, []

    def read(name):
        order.append(name)
        held[name] = defer.Deferred()
        return held[name]

    gate.admit("customer")
    gate.admit("admin")
    first = gate.read("customer", read, "c1")
    later = [gate.read("customer", read, f"c{n}") for n in (2, 3)]
    admin = gate.read("admin", read, "a1")
    assert order == ["c1"]
    held["c1"].callback("c1 done")
    assert first.result == "c1 done" and order == ["c1", "a1"]  # the admin's turn comes before c2
    held["a1"].callback("a1 done")
    assert admin.result == "a1 done" and order == ["c1", "a1", "c2"]
    held["c2"].callback(None)
    held["c3"].callback(None)
    assert all(d.called for d in later)


def test_the_gate_refuses_more_open_answers_than_a_caller_or_the_node_may_hold():
    from tbcoap.errors import StoreUnavailable

    gate = HistoryGate(streams_per_caller=2, max_streams=3)
    gate.admit("c")
    gate.admit("c")
    with pytest.raises(StoreUnavailable, match="this key's"):
        gate.admit("c")
    gate.admit("admin")
    with pytest.raises(StoreUnavailable, match="the node's"):
        gate.admit("other")
    gate.release("c")
    gate.admit("other")
    assert gate.stats()["refused"] == 2 and gate.stats()["openAnswers"] == 3


@pytest_twisted.ensureDeferred
async def test_one_customer_cannot_shut_the_admin_out(node, rest, device):
    """Forty reads of a customer at once, each held at the store: the customer gets its few open
    answers and 503 for the rest, and the admin's read is answered at once."""
    from tests.conftest import Rest

    status, customer = await rest.post("/api/customer", {"title": "greedy"})
    assert status == 200
    status, other = await rest.post("/api/device?accessToken=GREEDY", {"name": "greedy-device"})
    await node.core.store.set_device_customer(other["id"]["id"], customer["id"]["id"], None)  # its own device
    greedy = Rest(rest.base, customer["apiKey"])
    await store_points(node, device, ["t"], 10)
    store = node.core.store
    read, held = store.telemetry_history, []

    def slow_for_the_customer(device_id, keys, start, end, limit, descending):
        if device_id == other["id"]["id"]:
            held.append(defer.Deferred())
            return held[-1].addCallback(lambda _: {})
        return read(device_id, keys, start, end, limit, descending)

    store.telemetry_history = slow_for_the_customer
    try:
        url = series_url(other, "keys=t&startTs=0&endTs=9999999999999")
        reads = [defer.ensureDeferred(greedy.get(url)) for _ in range(40)]
        await sleep(0.3)
        refused = [d.result for d in reads if d.called]
        assert len(refused) == 40 - history.STREAMS_PER_CALLER
        assert all(status == 503 for status, _ in refused)
        assert len(held) == 1  # one running read per caller; the others wait for the customer's turn
        began = time.perf_counter()
        status, body = await rest.get(series_url(device, "keys=t&startTs=0&endTs=9999999999999"))
        assert status == 200 and len(body["t"]) == 10
        assert time.perf_counter() - began < 2
    finally:
        for d in held:
            d.callback(None)
        while len(held) < history.STREAMS_PER_CALLER:
            await sleep(0.05)
            for d in held:
                if not d.called:
                    d.callback(None)
        store.telemetry_history = read


# -- clients that stop reading ---------------------------------------------------------------

def stalled_get(port, path, key):
    """A GET whose client reads nothing after sending it (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Authorization: Bearer {key}\r\n\r\n".encode())
    return sock


@pytest_twisted.ensureDeferred
async def test_a_history_answer_nobody_reads_is_ended_and_frees_its_turn(start_node):
    from tests.conftest import ADMIN_KEY, Rest

    node = await start_node("--write-timeout", "1")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    status, device = await rest.post("/api/device?accessToken=STALL", {"name": "stall"})
    await store_points(node, device, [f"k{n}" for n in range(10)], 10_000)
    gate = node.core.telemetry.history_gate
    socks = [stalled_get(node.http_address[1], series_url(device, "startTs=0&endTs=9999999999999&limit=10000"),
                         ADMIN_KEY) for _ in range(3)]
    try:
        await sleep(0.5)
        assert gate.open == 3  # paused: the clients do not read
        deadline = time.monotonic() + 10
        while gate.open and time.monotonic() < deadline:
            await sleep(0.2)
        assert gate.open == 0, "an answer nobody reads kept its place"
        status, body = await rest.get(series_url(device, "keys=k1&startTs=0&endTs=9999999999999&limit=5"))
        assert status == 200 and len(body["k1"]) == 5
    finally:
        for sock in socks:
            sock.close()


@pytest_twisted.ensureDeferred
async def test_a_backup_nobody_reads_is_ended_and_frees_the_slot_and_its_file(start_node, tmp_path):
    import os

    from tests.conftest import ADMIN_KEY, Rest

    node = await start_node("--write-timeout", "1")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    status, device = await rest.post("/api/device?accessToken=BIG", {"name": "big"})
    await store_points(node, device, [f"key-{n}" for n in range(10)], 30_000)  # a file of some 20 MB
    data_dir = node.settings["data-dir"]
    sock = stalled_get(node.http_address[1], "/api/admin/backup", ADMIN_KEY)
    try:
        deadline = time.monotonic() + 10
        while not node.backup_running and time.monotonic() < deadline:
            await sleep(0.1)
        assert node.backup_running
        status, body = await rest.get("/api/admin/backup")
        assert status == 503  # the one slot is taken
        while node.backup_running and time.monotonic() < deadline + 10:
            await sleep(0.2)
        assert not node.backup_running, "a backup nobody reads held the slot"
        assert not [name for name in os.listdir(data_dir) if name.startswith(".backup-")]
    finally:
        sock.close()
    status, _ = await rest.get("/api/admin/backup")
    assert status == 200
