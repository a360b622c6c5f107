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
