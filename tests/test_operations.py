"""Operations (docs/operations.md): Prometheus metrics, time-series retention, online backup and
restore, over real sockets and real SQLite files."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, task

from tests.blocking import Coap, rest
from tests.coapclient import POST
from tests.conftest import ADMIN_KEY, Rest, require_redis

METRICS_KEY = "metrics-key-0123456789"
CREATED = 65
TBCOAP = os.path.join(os.path.dirname(sys.executable), "tbcoap")


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


async def scrape(node, key=ADMIN_KEY, accept=None):
    headers = {"Authorization": f"Bearer {key}"}
    if accept:
        headers["Accept"] = accept
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}/metrics", headers=headers)
    return response, (await response.content()).decode()


def samples(text):
    """``{(name, frozenset(labels)): value}`` of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


# -- metrics ------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_metrics_scrape_with_either_key(start_node, tmp_path):
    node = await start_node("--metrics-key", METRICS_KEY)
    rest_client = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    await rest_client.post("/api/device?accessToken=M1", {"name": "m"})
    from tests.coapclient import open_client

    client = await open_client(("127.0.0.1", node.coap_address[1]))
    for n in range(4):
        answer = await client.request(POST, "/api/v1/M1/telemetry", b'{"a":%d,"b":true}' % n)
        assert answer.code == CREATED
    await client.request(POST, "/api/v1/nobody/telemetry", b'{"a":1}')
    await client.port.stopListening()
    for key in (ADMIN_KEY, METRICS_KEY):
        response, text = await scrape(node, key)
        assert response.code == 200
        assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain; version=0.0.4")
        values = samples(text)
        assert values[("tbcoap_coap_requests_total", frozenset({("port", "coap"), ("code", "2.01")}))] == 4
        assert values[("tbcoap_coap_requests_total", frozenset({("port", "coap"), ("code", "4.01")}))] == 1
        assert values[("tbcoap_coap_request_duration_seconds_count", frozenset({("port", "coap")}))] == 5
        assert values[("tbcoap_telemetry_points_total", frozenset())] == 8
        assert values[("tbcoap_store_commit_duration_seconds_count", frozenset({("store", "sqlite")}))] >= 2
        assert values[("tbcoap_observations", frozenset({("kind", "rpc")}))] == 0
        assert values[("process_resident_memory_bytes", frozenset())] > 10 << 20
        assert ("tbcoap_info", frozenset({("version", __import__("tbcoap").__version__), ("store", "sqlite")})) in values
    response, text = await scrape(node, accept="application/openmetrics-text; version=1.0.0")
    assert response.headers.getRawHeaders("content-type")[0].startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    for key in ("", "wrong-key"):
        response, body = await scrape(node, key)
        assert response.code == 401 and json.loads(body)["status"] == 401
    status, body = await rest_client.get("/api/admin/stats", key=METRICS_KEY)
    assert status == 403  # the metrics key reads /metrics and nothing else


@pytest_twisted.ensureDeferred
async def test_latency_metrics_off(start_node):
    node = await start_node("--latency-metrics", "off")
    _, text = await scrape(node)
    assert not any(name.startswith("tbcoap_coap_request_duration") for name, _ in samples(text))
    assert node.coap.latency is None


@pytest.mark.parametrize("args,message", [
    (["--metrics-key", "short"], "at least 16"), (["--latency-metrics", "maybe"], "on or off"),
    (["--ts-ttl", "ten days"], "a duration"), (["--ts-ttl", "-5"], "duration")])
def test_bad_operations_options(args, message):
    from twisted.python import usage

    from tbcoap.service import Options

    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(args)


@pytest.mark.parametrize("text,seconds", [("0", 0), ("90d", 90 * 86400), ("12h", 43200), ("3600s", 3600),
                                          ("45", 45), ("30m", 1800)])
def test_ts_ttl_forms(text, seconds):
    from tbcoap.service import Options

    options = Options()
    options.parseOptions(["--ts-ttl", text])
    assert options.settings["ts-ttl"] == seconds


# -- retention ----------------------------------------------------------------------------

async def history(rest_client, device, keys="t"):
    status, body = await rest_client.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                         f"?keys={keys}&startTs=0&endTs={10**13}&orderBy=ASC&useStrictDataTypes=true")
    assert status == 200
    return {key: [point["ts"] for point in points] for key, points in body.items()}


@pytest_twisted.ensureDeferred
async def test_old_points_go_and_latest_values_stay(start_node):
    node = await start_node("--ts-ttl", "2s")
    rest_client = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    _, device = await rest_client.post("/api/device", {"name": "r"})
    now = int(time.time() * 1000)
    old = [{"ts": now - 3_600_000 + n, "values": {"t": n, "o": n}} for n in range(50)]
    assert (await rest_client.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/timeseries/ANY",
                                   old + [{"ts": now, "values": {"t": 99}}]))[0] == 200
    assert len((await history(rest_client, device, "t,o"))["t"]) == 51
    for _ in range(60):  # a pass runs every second with a TTL of 2 s
        await sleep(0.1)
        if node.core.retention.expired >= 100:
            break
    assert await history(rest_client, device, "t,o") == {"t": [now]}
    status, latest = await rest_client.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                           "?keys=t,o&useStrictDataTypes=true")
    assert {key: points[0]["value"] for key, points in latest.items()} == {"t": 99, "o": 49}
    _, text = await scrape(node)
    assert samples(text)[("tbcoap_telemetry_points_expired_total", frozenset())] == 100
    status, stats = await rest_client.get("/api/admin/stats")
    assert stats["retention"]["expiredPoints"] == 100 and stats["retention"]["ttlMs"] == 2000


@pytest_twisted.ensureDeferred
async def test_a_point_with_its_own_ttl_expires_after_it(start_node):
    node = await start_node()  # no --ts-ttl: only points given a TTL go
    rest_client = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    _, device = await rest_client.post("/api/device", {"name": "r"})
    base = f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/timeseries/ANY"
    now = int(time.time() * 1000)
    assert (await rest_client.post(base + "/1", [{"ts": now, "values": {"t": 1}}]))[0] == 200
    assert (await rest_client.post(base, [{"ts": now + 1, "values": {"t": 2}}]))[0] == 200
    assert (await history(rest_client, device))["t"] == [now, now + 1]
    started = time.monotonic()
    while (await history(rest_client, device))["t"] != [now + 1]:
        assert time.monotonic() - started < 5, "the point outlived its time to live"
        await sleep(0.1)
    assert time.monotonic() - started > 0.5  # not before its time


class _PacedStore:
    """Deletes ``batch`` points per call, taking ``took`` seconds of ``clock``; devices write
    ``writes_per_call`` times meanwhile (the store's own call counts as a write)."""

    def __init__(self, clock, backlog, took, writes_per_call):
        self.clock, self.backlog, self.took, self.writes_per_call = clock, backlog, took, writes_per_call
        self.writes, self.calls = 0, []

    def expire_telemetry(self, now, older_than, limit):
        from twisted.internet import defer
        count = min(limit, self.backlog)
        self.backlog -= count
        self.calls.append(self.clock.seconds())
        self.writes += 1 + self.writes_per_call
        self.clock.advance(self.took)
        return defer.succeed((count, count == limit))

    def stats(self):
        return {"writes": self.writes}


@pytest.mark.parametrize("writes_per_call, share", [(3, 0.05), (0, 0.5)])
def test_retention_takes_a_small_share_of_the_store_while_devices_write(writes_per_call, share):
    from tbcoap.services.retention import RetentionService
    clock = task.Clock()
    store = _PacedStore(clock, backlog=10 * 500, took=0.1, writes_per_call=writes_per_call)
    retention = RetentionService(store, ttl_ms=60_000, clock=clock)
    done = retention.run_pass()
    for _ in range(1000):
        clock.advance(0.1)
    assert done.called and retention.expired == 5000 and store.backlog == 0
    gaps = [b - a for a, b in zip(store.calls, store.calls[1:])]
    # each gap is the batch (0.1 s) plus a pause making the batch `share` of the time
    assert len(gaps) == 10 and all(abs(gap - 0.1 / share) < 0.11 for gap in gaps[1:])


@pytest_twisted.ensureDeferred
async def test_retention_on_redis(start_node):
    url = require_redis()
    import uuid

    from tests.redisutil import Resp

    prefix = f"retention-{uuid.uuid4().hex[:10]}"
    node = await start_node("--store", f"{url}?prefix={prefix}", "--ts-ttl", "2s")
    try:
        rest_client = Rest(f"http://127.0.0.1:{node.http_address[1]}")
        _, device = await rest_client.post("/api/device", {"name": "r"})
        now = int(time.time() * 1000)
        points = [{"ts": now - 60_000 + n, "values": {"t": n}} for n in range(30)] + [{"ts": now, "values": {"t": 9}}]
        await rest_client.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/timeseries/ANY", points)
        for _ in range(60):
            await sleep(0.1)
            if node.core.retention.expired >= 30:
                break
        assert await history(rest_client, device) == {"t": [now]}
    finally:
        client = Resp.for_url(url)
        client.delete_prefix(prefix)
        client.close()


# -- backup and restore -------------------------------------------------------------------

class Load(threading.Thread):
    """Posts telemetry with increasing timestamps; ``acked`` holds (ts, when acknowledged)."""

    def __init__(self, address, token):
        super().__init__(daemon=True)
        self.client = Coap(address)
        self.token, self.acked, self.running, self.ts = token, [], True, 1_000_000

    def run(self):
        while self.running:
            self.ts += 1
            payload = json.dumps({"ts": self.ts, "values": {"n": self.ts}})
            if self.client.request(POST, f"/api/v1/{self.token}/telemetry", payload) == CREATED:
                self.acked.append((self.ts, time.monotonic()))

    def stop(self):
        self.running = False
        self.join(30)
        self.client.close()


def test_backup_under_load_restores_every_acknowledged_point(launch, tmp_path):
    data = tmp_path / "data"
    node = launch(data_dir=data)
    status, device = rest(node.url, "POST", "/api/device?accessToken=BK1", {"name": "bk"})
    assert status == 200
    load = Load(node.coap_address, "BK1")
    load.start()
    time.sleep(1.0)
    began = time.monotonic()
    done = subprocess.run([TBCOAP, "--url", node.url, "--key", ADMIN_KEY, "backup", str(tmp_path / "b.sqlite3")],
                          capture_output=True, text=True, timeout=120)
    time.sleep(0.5)
    load.stop()
    assert done.returncode == 0, done.stderr
    assert "written to" in done.stdout
    before = [ts for ts, at in load.acked if at < began]
    assert len(before) > 50 and len(load.acked) > len(before)  # the node kept serving during the backup
    assert not [name for name in os.listdir(data) if name.startswith(".backup")]  # nothing left behind
    node.stop()
    # restore: stop, put the file in place, start
    for suffix in ("", "-wal", "-shm"):
        path = data / f"tbcoap.sqlite3{suffix}"
        if path.exists():
            path.unlink()
    shutil.copy(tmp_path / "b.sqlite3", data / "tbcoap.sqlite3")
    restored = launch(data_dir=data, log_name="restored.log")
    status, body = rest(restored.url, "GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                            f"?keys=n&startTs=0&endTs={10**13}&limit=100000&orderBy=ASC")
    assert status == 200
    kept = {point["ts"] for point in body["n"]}
    assert set(before) <= kept, f"{len(set(before) - kept)} acknowledged points missing"
    assert sqlite3.connect(tmp_path / "b.sqlite3").execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_backup_refuses_to_overwrite_and_redis_says_what_to_use(launch, tmp_path):
    url = require_redis()
    import uuid

    from tests.redisutil import Resp

    node = launch()
    (tmp_path / "exists.sqlite3").write_text("x")
    done = subprocess.run([TBCOAP, "--url", node.url, "--key", ADMIN_KEY, "backup", str(tmp_path / "exists.sqlite3")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "--force" in done.stderr
    prefix = f"backup-{uuid.uuid4().hex[:10]}"
    redis_node = launch("--store", f"{url}?prefix={prefix}", data_dir=tmp_path / "redis-data", log_name="redis.log")
    try:
        status, body = rest(redis_node.url, "GET", "/api/admin/backup")
        assert status == 501 and "BGSAVE" in body["message"]
        done = subprocess.run([TBCOAP, "--url", redis_node.url, "--key", ADMIN_KEY, "backup",
                               str(tmp_path / "r.sqlite3")], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and "BGSAVE" in done.stderr and not (tmp_path / "r.sqlite3").exists()
        assert not (tmp_path / "r.sqlite3.part").exists()
    finally:
        client = Resp.for_url(url)
        client.delete_prefix(prefix)
        client.close()
    status, body = rest(node.url, "GET", "/api/admin/backup", key="")
    assert status == 401


@pytest_twisted.ensureDeferred
async def test_a_backup_client_that_goes_away_leaves_no_file_behind(start_node, tmp_path):
    from twisted.internet.protocol import ClientCreator, Protocol

    node = await start_node(data_dir=tmp_path / "data")
    device, _ = await node.core.devices.create("big", token="BIG-1")
    blob = "x" * 1000
    for batch in range(40):  # about 40 MB: more than the socket buffers hold
        await node.store.save_telemetry(device.id, [(batch * 1000 + n, "s", blob) for n in range(1000)])

    class Reader(Protocol):
        received = 0

        def dataReceived(self, data):
            self.received += len(data)
            if self.received > 1 << 20:
                self.transport.abortConnection()  # gone after the first megabyte

    reader = await ClientCreator(reactor, Reader).connectTCP("127.0.0.1", node.http_address[1])
    reader.transport.write(b"GET /api/admin/backup HTTP/1.1\r\nHost: x\r\n"
                           b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n\r\n")
    for _ in range(300):
        await sleep(0.05)
        if reader.received > 1 << 20 and not node.backup_running:
            break
    assert reader.received > 1 << 20 and not node.backup_running
    assert not [name for name in os.listdir(tmp_path / "data") if name.startswith(".backup")]
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}/api/admin/backup",
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.code == 200 and len(await response.content()) > 40_000_000  # the next backup runs


@pytest_twisted.ensureDeferred
async def test_a_backup_is_sent_as_the_store_declares_it(start_node, tmp_path):
    node = await start_node(data_dir=tmp_path / "data")
    url = f"http://127.0.0.1:{node.http_address[1]}/api/admin/backup"
    sent = []
    for backup_type in (None, ("application/x-tbcoap-test", "snap")):  # the SQLite store's, then another
        if backup_type is not None:
            node.store.backup_type = backup_type  # the store says what its backup is; REST follows
        response = await treq.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        body = await response.content()
        assert response.code == 200 and body.startswith(b"SQLite format 3\0")
        (disposition,) = response.headers.getRawHeaders("content-disposition")
        assert disposition.startswith('attachment; filename="tbcoap-') and disposition.endswith('"')
        sent.append((*response.headers.getRawHeaders("content-type"), disposition[:-1].rpartition(".")[2]))
    assert sent == [("application/vnd.sqlite3", "sqlite3"), ("application/x-tbcoap-test", "snap")]


@pytest_twisted.ensureDeferred
async def test_a_backup_whose_file_cannot_be_read_answers_500_and_frees_the_next(start_node, tmp_path):
    from twisted.internet import defer

    node = await start_node(data_dir=tmp_path / "data")
    node.store.backup = lambda path: defer.succeed(0)  # "written", but no file is there to send
    url = f"http://127.0.0.1:{node.http_address[1]}/api/admin/backup"
    for _ in range(2):  # the second is a 500 again, not "a backup is being taken already"
        response = await treq.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        body = json.loads(await response.content())
        assert response.code == 500 and body["message"] == "internal server error"
    assert not node.backup_running


@pytest_twisted.ensureDeferred
async def test_a_start_removes_snapshots_a_stopped_node_left_behind(start_node, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / ".backup-0123abcd.part").write_bytes(b"half a snapshot")
    (data / "keep.part").write_bytes(b"not ours")
    node = await start_node(data_dir=data)
    assert node.running
    assert sorted(name for name in os.listdir(data) if name.endswith(".part")) == ["keep.part"]
