"""A killed Redis costs service, not data: private redis-server (and Sentinel) processes that the
tests start, kill and restart, never the shared one."""

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task

from tests.coapclient import GET, POST, code_text, open_client
from tests.conftest import Rest
from tests.redisutil import PrivateRedis, PrivateSentinel, require_redis_server


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def private_redis(tmp_path):
    require_redis_server()
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


async def post(client, n, timeout=10.0):
    """Telemetry ``n`` at a timestamp of its own (one ms apart: a same-ts write would replace it)."""
    payload = json.dumps({"ts": 1_700_000_000_000 + n, "values": {"n": n}}).encode()
    answer = await client.request(POST, "/api/v1/TOKEN-1/telemetry", payload, timeout=timeout)
    return code_text(answer.code)


async def until_ok(client, n, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await post(client, n) == "2.01":
            return True
        await sleep(0.2)
    return False


async def history(rest, device_id):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"
                                  "?keys=n&startTs=0&endTs=9999999999999&limit=1000&useStrictDataTypes=true")
    assert status == 200, body
    return sorted(point["value"] for point in body.get("n", []))


@pytest_twisted.ensureDeferred
async def test_redis_down_is_503_then_service_resumes_with_nothing_acknowledged_lost(start_node, private_redis):
    node = await start_node("--store", private_redis.url + "?timeout=1")
    device, _ = await node.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    acknowledged = [n for n in range(20) if await post(client, n) == "2.01"]
    assert acknowledged == list(range(20))

    private_redis.kill()
    started = time.monotonic()
    assert await post(client, 100) == "5.03"  # within the store's timeout, never a hang
    assert time.monotonic() - started < 3.0
    status, body = await rest.get(f"/api/device/{device.id}")
    assert status == 503
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}/api/health")
    health = json.loads(await response.content())
    assert response.code == 503 and health["down"] == ["store"] and "redis" in health["details"]["store"]

    private_redis.start()  # the client reconnects by itself; no restart of the node
    assert await until_ok(client, 200)
    assert await history(rest, device.id) == sorted(acknowledged + [200])
    response = await treq.get(f"http://127.0.0.1:{node.http_address[1]}/api/health")
    assert response.code == 200
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_restarted_node_finds_every_device_state_in_redis(start_node, private_redis, tmp_path):
    url = private_redis.url
    first = await start_node("--store", url, data_dir=tmp_path / "one")
    device, _ = await first.core.devices.create("d", token="TOKEN-1")
    await first.core.telemetry.upload(device, b'{"t":1}')
    await first.core.attributes.save(device.id, "SHARED_SCOPE", b'{"s":2}')
    rpc = await first.core.rpc.submit(device.id, {"method": "m", "persistent": True, "timeout": 600000}, False)
    await first.stopService()
    second = await start_node("--store", url, data_dir=tmp_path / "two")
    assert (await second.core.devices.by_name("d")).id == device.id
    assert await second.core.devices.authenticate("TOKEN-1") is not None
    assert {k: v for k, (_, v) in (await second.core.telemetry.latest(device.id)).items()} == {"t": 1}
    assert (await second.core.attributes.shared(device)) == {"s": 2}
    assert (await second.core.rpc.get(rpc["rpcId"])).status == "QUEUED"


@pytest_twisted.ensureDeferred
async def test_a_lost_bus_connection_resyncs_observers(start_node, private_redis, tmp_path):
    url = private_redis.url
    a = await start_node("--store", url, data_dir=tmp_path / "a")
    b = await start_node("--store", url, data_dir=tmp_path / "b")
    device, _ = await a.core.devices.create("d", token="TOKEN-1")
    client = await open_client(("127.0.0.1", b.coap_address[1]))
    await client.request(GET, "/api/v1/TOKEN-1/attributes", observe=0, token=b"obs")
    control = private_redis.client()
    control.call("CLIENT", "KILL", "TYPE", "pubsub")  # every subscriber loses its connection
    control.close()
    await a.core.attributes.save(device.id, "SHARED_SCOPE", b'{"missed":1}')  # maybe while b is away
    while True:
        message = await client.receive(10)
        if message.token == b"obs" and json.loads(message.payload).get("missed") == 1:
            break
    bus = b.core.bus
    await _until(lambda: bus.counters["resyncs"] >= 1)
    await client.port.stopListening()


async def _until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_a_sentinel_failover_is_followed(start_node, tmp_path):
    require_redis_server()
    primary = PrivateRedis(tmp_path / "primary").start()
    replica = PrivateRedis(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port)).start()
    sentinel = PrivateSentinel(tmp_path / "sentinel", primary.port).start()
    try:
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0?timeout=2&wait=1"
        control = replica.client()
        await _until(lambda: "master_link_status:up" in control.call("INFO", "replication"))
        control.close()
        node = await start_node("--store", url)
        device, _ = await node.core.devices.create("d", token="TOKEN-1")
        client = await open_client(("127.0.0.1", node.coap_address[1]))
        acknowledged = []
        for n in range(10):  # wait=1: each 2.01 also means the replica has it
            if await post(client, n) == "2.01":
                acknowledged.append(n)
        assert acknowledged == list(range(10))
        primary.kill()
        deadline = time.monotonic() + 30
        while sentinel.primary()[1] != replica.port:
            assert time.monotonic() < deadline, "sentinel did not fail over"
            await sleep(0.2)
        primary.start()  # back, as the new primary's replica: wait=1 can be met again
        assert await until_ok(client, 100, seconds=30)  # the node follows the new primary
        rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
        assert await history(rest, device.id) == acknowledged + [100]
        await client.port.stopListening()
    finally:
        sentinel.stop()
        replica.stop()
        primary.stop()


@pytest_twisted.ensureDeferred
async def test_rediss_checks_the_server_certificate(start_node, tmp_path):
    from tests.certs import make_ca, make_cert

    require_redis_server()
    ca = make_ca()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = make_cert(ca, "redis", dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "redis")
    server = PrivateRedis(tmp_path / "tls", tls=(cert, key, str(ca_file))).start()
    try:
        node = await start_node("--store", f"rediss://localhost:{server.port}/0?ca={ca_file}&timeout=2")
        device, _ = await node.core.devices.create("tls-device", token="TOKEN-1")
        client = await open_client(("127.0.0.1", node.coap_address[1]))
        assert await post(client, 1) == "2.01"
        assert (await node.core.telemetry.latest(device.id))["n"][1] == 1
        await client.port.stopListening()
        # a certificate authority the server's certificate does not chain to: no connection
        other = make_ca("another CA")
        other_file = tmp_path / "other.pem"
        other_file.write_bytes(other.cert_pem)
        from tbcoap_redis import make_store

        store = make_store(f"rediss://localhost:{server.port}/0?ca={other_file}&timeout=1", {})
        with pytest.raises(Exception, match="cannot use redis"):
            await store.open()
    finally:
        server.stop()


# -- a store that cannot open says why, at once, in one line ------------------------------------

@pytest.fixture
def logged():
    """The text of every log event while the test runs."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines = []

    def observe(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


async def refused(url):
    """The message of the StoreUnavailable that opening a store on ``url`` fails with, and how long
    the open took."""
    from tbcoap.errors import StoreUnavailable
    from tbcoap_redis import make_store

    store = make_store(url, {})
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as failure:
        await store.open()
    took = time.monotonic() - started
    await store.close()
    message = str(failure.value)
    assert "\n" not in message
    return message, took


def assert_no_chatter(lines):
    """No reconnection attempts logged, no txredisapi error line, no timeout hiding the cause."""
    noisy = [line for line in lines if "Scheduling retry" in line or "Redis error" in line
             or "did not answer" in line or "reconnect" in line]
    assert not noisy, noisy


@pytest_twisted.ensureDeferred
async def test_open_fails_at_once_naming_a_refused_connection(logged):
    from tests.redisutil import free_port

    port = free_port()  # nothing listens there
    message, took = await refused(f"redis://127.0.0.1:{port}/0?timeout=5")
    assert message == (f"cannot use redis at redis://127.0.0.1:{port}/0?prefix=tbcoap: "
                       f"connection refused: is Redis running at 127.0.0.1:{port}?")
    assert took < 2.5  # the first attempt's cause, not the 5 s timeout
    assert_no_chatter(logged)


@pytest_twisted.ensureDeferred
async def test_open_names_a_wrong_password_a_missing_one_and_a_missing_database(tmp_path, logged):
    require_redis_server()
    server = PrivateRedis(tmp_path / "redis", password="s3cret").start()
    try:
        where = f"127.0.0.1:{server.port}"
        message, _ = await refused(f"redis://:wrong@{where}/0?timeout=5")
        assert message == (f"cannot use redis at redis://{where}/0?prefix=tbcoap: authentication failed at "
                           f"{where}: WRONGPASS invalid username-password pair or user is disabled.")
        message, _ = await refused(f"redis://{where}/0?timeout=5")
        assert message == (f"cannot use redis at redis://{where}/0?prefix=tbcoap: authentication required: "
                           f"{where} wants a password and the URL gives none (NOAUTH Authentication required.)")
        message, took = await refused(f"redis://:s3cret@{where}/99?timeout=5")
        assert message == (f"cannot use redis at redis://{where}/99?prefix=tbcoap: no database 99 at {where} "
                           "(ERR DB index is out of range)")
        assert took < 2.5
        from tbcoap_redis import make_store

        store = make_store(f"redis://:s3cret@{where}/1?timeout=5", {})  # the right password and database
        await store.open()
        await store.close()
    finally:
        server.stop()
    assert_no_chatter(logged)


@pytest_twisted.ensureDeferred
async def test_open_names_a_tls_mismatch(tmp_path, logged):
    from tests.certs import make_ca, make_cert

    require_redis_server()
    ca = make_ca()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = make_cert(ca, "redis", dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "redis")
    tls = PrivateRedis(tmp_path / "tls", tls=(cert, key, str(ca_file))).start()
    plain = PrivateRedis(tmp_path / "plain").start()
    try:
        message, _ = await refused(f"redis://localhost:{tls.port}/0?timeout=5")  # plain text to a TLS port
        assert message == (f"cannot use redis at redis://localhost:{tls.port}/0?prefix=tbcoap: localhost:{tls.port} "
                           "closed the connection before it was ready (a TLS port? then use rediss://)")
        other = tmp_path / "other.pem"  # a CA the server's certificate does not chain to
        other.write_bytes(make_ca("another CA").cert_pem)
        message, _ = await refused(f"rediss://localhost:{tls.port}/0?ca={other}&timeout=5")
        assert message == (f"cannot use redis at rediss://localhost:{tls.port}/0?prefix=tbcoap: "
                           f"TLS with localhost:{tls.port} failed: certificate verify failed")
        message, _ = await refused(f"rediss://localhost:{plain.port}/0?ca={ca_file}&timeout=1")  # TLS to plain
        assert message == (f"cannot use redis at rediss://localhost:{plain.port}/0?prefix=tbcoap: no answer from "
                           f"localhost:{plain.port} within 1 s (rediss://: is it a TLS port?)")
    finally:
        tls.stop()
        plain.stop()
    assert_no_chatter(logged)


@pytest_twisted.ensureDeferred
async def test_open_names_an_unreachable_sentinel_and_an_unknown_service(tmp_path, logged):
    from tests.redisutil import free_port

    require_redis_server()
    port = free_port()
    message, _ = await refused(f"redis+sentinel://127.0.0.1:{port}/mymaster/0?timeout=5")
    assert message == (f"cannot use redis at redis+sentinel://127.0.0.1:{port}/mymaster/0?prefix=tbcoap: "
                       f"no Sentinel answered: connection refused: is Sentinel running at 127.0.0.1:{port}?")
    primary = PrivateRedis(tmp_path / "primary").start()
    sentinel = PrivateSentinel(tmp_path / "sentinel", primary.port).start()
    try:
        message, _ = await refused(f"redis+sentinel://127.0.0.1:{sentinel.port}/elsewhere/0?timeout=5")
        assert message == (f"cannot use redis at redis+sentinel://127.0.0.1:{sentinel.port}/elsewhere/0"
                           f"?prefix=tbcoap: Sentinel at 127.0.0.1:{sentinel.port} knows no service 'elsewhere'")
    finally:
        sentinel.stop()
        primary.stop()
    assert_no_chatter(logged)


def test_a_node_whose_redis_is_not_running_logs_why_and_stops(tmp_path):
    from tests.redisutil import free_port
    from tests.test_service import PORTS, run_twistd

    port = free_port()
    code, output = run_twistd("--data-dir", str(tmp_path / "data"), "--admin-key", "k", *PORTS,
                              "--store", f"redis://127.0.0.1:{port}/0", cwd=tmp_path)
    assert code == 1, output
    assert [line for line in output.splitlines() if line.endswith(
        f"cannot open the store: cannot use redis at redis://127.0.0.1:{port}/0?prefix=tbcoap: "
        f"connection refused: is Redis running at 127.0.0.1:{port}?")], output
    assert "Scheduling retry" not in output and "did not answer" not in output, output


@pytest_twisted.ensureDeferred
async def test_an_outage_is_logged_once_not_per_reconnection_attempt(private_redis, logged):
    from tbcoap_redis import make_store

    store = make_store(private_redis.url + "?timeout=1", {})
    await store.open()
    link = store.redis.link
    link.factory.initialDelay, link.factory.maxDelay = 0.05, 0.1  # txredisapi's backoff, shortened
    try:
        private_redis.kill()
        await _until(lambda: link.attempts >= 5)  # five attempts failed while Redis was down
        private_redis.start()
        await _until(lambda: link.protocol is not None)
        assert await store.check() is None
    finally:
        await store.close()
    mine = [line for line in logged if line.startswith("redis store: ")]
    where = f"127.0.0.1:{private_redis.port}"
    assert mine[0] in (f"redis store: lost the connection to {where} ({how}); reconnecting with backoff (up to 0.1 s)"
                       for how in ("closed by the server", "the connection broke"))
    assert mine[1] == f"redis store: cannot reconnect yet: connection refused: is Redis running at {where}?"
    assert mine[2].startswith(f"redis store: connected to {where} again after ") and len(mine) == 3, mine
    assert not [line for line in logged if "Scheduling retry" in line], logged
