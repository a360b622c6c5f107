"""A stopped or restarted PostgreSQL costs service, not data: private PostgreSQL servers that the
tests start, kill and restart on free ports (never the shared one), and errors that name their
cause in one line."""

import json
import threading
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task

from tbcoap.errors import StoreUnavailable
from tbcoap_postgres import make_store
from tests.blocking import Coap
from txthings import coap as tx

from tests.coapclient import ACK, CON, GET, POST, code_text, open_client
from tests.conftest import Rest, require_postgres
from tests.pgutil import PrivateCluster, TestDatabase, free_port

CREATED = 65


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def private_postgres():
    cluster = PrivateCluster().start()
    yield cluster
    cluster.remove()


async def post(client, n, timeout=10.0):
    """Telemetry ``n`` at a timestamp of its own (one ms apart: a same-ts write would replace it)."""
    payload = json.dumps({"ts": 1_700_000_000_000 + n, "values": {"n": n}}).encode()
    answer = await client.request(POST, "/api/v1/TOKEN-1/telemetry", payload, timeout=timeout)
    return code_text(answer.code)


async def until_ok(client, n, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await post(client, n) == "2.01":
            return True
        await sleep(0.2)
    return False


async def history(rest, device_id):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"
                                  "?keys=n&startTs=0&endTs=9999999999999&limit=100000&useStrictDataTypes=true")
    assert status == 200, body
    return sorted(point["value"] for point in body.get("n", []))


async def health(node):
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}/api/health")
    return response.code, json.loads(await response.content())


@pytest_twisted.ensureDeferred
async def test_postgres_down_is_503_then_service_resumes_with_nothing_acknowledged_lost(start_node,
                                                                                         private_postgres):
    node = await start_node("--store", private_postgres.url + "?timeout=1")
    device, _ = await node.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    acknowledged = [n for n in range(20) if await post(client, n) == "2.01"]
    assert acknowledged == list(range(20))

    private_postgres.kill()
    for n in (100, 101, 102):  # the first may meet the broken connection, the next ones the down store
        started = time.monotonic()
        assert await post(client, n) == "5.03"  # within the store's timeout, never a hang
        assert time.monotonic() - started < 3.0
    status, body = await rest.get(f"/api/device/{device.id}")
    assert status == 503 and "is PostgreSQL running at 127.0.0.1" in body["message"], body
    code, state = await health(node)
    assert code == 503 and state["down"] == ["store"]
    assert state["details"]["store"].startswith("postgresql: ") and "refused" in state["details"]["store"]

    private_postgres.start()  # the store reconnects by itself; no restart of the node
    assert await until_ok(client, 200)
    assert await history(rest, device.id) == sorted(acknowledged + [200])
    code, _ = await health(node)
    assert code == 200
    assert node.store.stats()["reconnects"] >= 1
    await client.port.stopListening()


class Load(threading.Thread):
    """Posts telemetry with increasing timestamps from several sockets; ``acked`` holds the 2.01 ones."""

    def __init__(self, address, token, senders=4):
        super().__init__(daemon=True)
        self.address, self.token, self.senders = address, token, senders
        self.acked, self.refused, self.running = [], 0, True
        self.lock = threading.Lock()
        self.next = 0

    def _send(self):
        client = Coap(self.address)
        try:
            while self.running:
                with self.lock:
                    self.next += 1
                    n = self.next
                payload = json.dumps({"ts": 1_700_000_000_000 + n, "values": {"n": n}})
                try:
                    code = client.request(POST, f"/api/v1/{self.token}/telemetry", payload, timeout=5)
                except (OSError, AssertionError):  # no answer in time
                    code = None
                with self.lock:
                    if code == CREATED:
                        self.acked.append(n)
                    else:
                        self.refused += 1
                if code != CREATED:
                    time.sleep(0.05)
        finally:
            client.close()

    def run(self):
        threads = [threading.Thread(target=self._send, daemon=True) for _ in range(self.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def test_a_postgres_restart_under_load_loses_nothing_acknowledged(launch, tmp_path):
    cluster = PrivateCluster().start()
    try:
        node = launch("--store", cluster.url + "?timeout=2")
        from tests.blocking import rest

        status, device = rest(node.url, "POST", "/api/device?accessToken=LOAD1", {"name": "load"})
        assert status == 200
        load = Load(node.coap_address, "LOAD1")
        load.start()
        time.sleep(2.0)
        before = len(load.acked)
        cluster.kill()  # a crash: no checkpoint, recovery from the WAL at the next start
        time.sleep(1.0)
        cluster.start()
        deadline = time.monotonic() + 30
        while len(load.acked) < before + 200:
            assert time.monotonic() < deadline, f"service did not resume: {len(load.acked)} acknowledged"
            time.sleep(0.1)
        load.running = False
        load.join(30)
        assert before > 50 and load.refused > 0  # there was load before, and refusals while it was down
        status, body = rest(node.url, "GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                             f"?keys=n&startTs=0&endTs={10**13}&limit=100000")
        assert status == 200
        kept = {int(point["value"]) for point in body["n"]}
        missing = set(load.acked) - kept
        assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged points missing"
    finally:
        cluster.remove()


@pytest_twisted.ensureDeferred
async def test_a_lost_listening_connection_resyncs_observers(start_node, tmp_path):
    require_postgres()
    database = TestDatabase("tbcoap_listen")
    try:
        url = database.url("timeout=2")
        a = await start_node("--store", url, data_dir=tmp_path / "a")
        b = await start_node("--store", url, data_dir=tmp_path / "b")
        device, _ = await a.core.devices.create("d", token="TOKEN-1")
        client = await open_client(("127.0.0.1", b.coap_address[1]))
        await client.request(GET, "/api/v1/TOKEN-1/attributes", observe=0, token=b"obs")
        control = database.connect()
        ended = control.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                                " AND query LIKE 'LISTEN%%'", (database.name,)).fetchall()
        assert len(ended) == 2  # both nodes' listening connections
        await a.core.attributes.save(device.id, "SHARED_SCOPE", b'{"missed":1}')  # maybe while b is away
        while True:
            message = await received(client)
            if message.token == b"obs" and json.loads(message.payload).get("missed") == 1:
                break
        deadline = time.monotonic() + 10
        while b.core.bus.counters["resyncs"] < 1:
            assert time.monotonic() < deadline, "no resync"
            await sleep(0.05)
        # and it listens again: the next change arrives as a plain notification
        before = b.core.bus.counters["received"]
        await a.core.attributes.save(device.id, "SHARED_SCOPE", b'{"after":2}')
        while True:
            message = await received(client)
            if message.token == b"obs" and json.loads(message.payload).get("after") == 2:
                break
        assert b.core.bus.counters["received"] > before
        control.close()
        await client.port.stopListening()
        for node in (a, b):
            await node.stopService()
    finally:
        database.drop()


async def received(client):
    """The next message, acknowledged if it is a CON (a notification waits for the previous one's ACK)."""
    message = await client.receive(10)
    if message.mtype == CON:
        client.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
    return message


async def open_error(url):
    store = make_store(url, {})
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest_twisted.ensureDeferred
async def test_store_errors_name_their_cause_in_one_line(private_postgres):
    port = free_port()
    message = await open_error(f"postgresql://postgres@127.0.0.1:{port}/postgres?timeout=2")
    assert f"refused the connection: is PostgreSQL running at 127.0.0.1:{port}?" in message
    message = await open_error(private_postgres.url.rsplit("/", 1)[0] + "/nosuchdb?timeout=2")
    assert 'database "nosuchdb" does not exist (create it: createdb nosuchdb)' in message
    message = await open_error(f"postgresql://nobody@127.0.0.1:{private_postgres.port}/postgres?timeout=2")
    assert 'role "nobody" does not exist' in message
    message = await open_error(private_postgres.url + "?sslmode=require&timeout=2")  # a server without TLS
    assert "TLS failed (sslmode=require)" in message
    import psycopg

    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        conn.execute("CREATE ROLE tbcoap_pw LOGIN PASSWORD 'right'")
    private_postgres.require_passwords()
    message = await open_error(f"postgresql://tbcoap_pw:wrong@127.0.0.1:{private_postgres.port}/postgres?timeout=2")
    assert "authentication failed for tbcoap_pw" in message
    assert "wrong" not in message  # the password is never shown
