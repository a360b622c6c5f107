"""One device token must not stall, starve or bloat the server: each finding of the attack pass,
reproduced at a scale that runs in seconds (benchmarks/attack.py runs them at full scale).

Observations (count per device, per address, in all; cost of ending them), byte budgets for cached
answers and waiting notifications, merged attribute notifications, provisioning per address.
"""

import json

import pytest_twisted
from twisted.internet import defer, reactor, task
from txthings import coap as tx

from tbcoap.events import LocalBus
from tbcoap.services.rpc import RpcService
from tests.coapclient import ACK, CON, GET, POST, CoapClient, code_text, open_client

ATTRIBUTES = "/api/v1/TOKEN-1/attributes"
RPC = "/api/v1/TOKEN-1/rpc"


def max_age(message):
    return message.opt.getOption(tx.MAX_AGE)[0].value


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


async def client_on(node, host="127.0.0.1"):
    """A raw CoAP client bound to ``host`` (any 127.x.y.z is this machine: another source address)."""
    client = CoapClient(("127.0.0.1", node.coap_address[1]))
    client.port = reactor.listenUDP(0, client, interface=host)
    return client


async def observe(client, path, token, ack=True):
    return await client.request(GET, path, observe=0, token=token)


async def set_shared(rest, device, values):
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE", values)
    assert status == 200


# -- the stall: ending relations never scans the others ------------------------------

class CountingChannel:
    """A channel whose comparisons are counted: a scan of a list of channels shows as calls."""

    comparisons = 0

    def __eq__(self, other):
        CountingChannel.comparisons += 1
        return self is other

    __hash__ = object.__hash__

    def send(self, message, on_result):
        pass


def test_ending_rpc_channels_costs_no_scan():
    store = type("NoStore", (), {"pending_rpcs": lambda self, device_id=None: defer.succeed([])})()
    rpc = RpcService(store, LocalBus(), clock=task.Clock())
    channels = [CountingChannel() for _ in range(5000)]
    for channel in channels:
        rpc.add_channel("d", channel)
    CountingChannel.comparisons = 0
    for channel in channels:  # as 5,000 relations timing out at once would
        rpc.remove_channel("d", channel)
    # a list scanned per removal made 12.5 million comparisons here (the 90 s stall at 100,000)
    assert CountingChannel.comparisons == 0 and rpc.stats()["rpcChannels"] == 0


@pytest_twisted.ensureDeferred
async def test_thousands_of_unacknowledged_rpc_relations_end_and_the_rpc_waits_again(start_node):
    node = await start_node("--max-device-observations", "5000", "--max-peer-observations", "5000",
                            "--ack-timeout", "0.2", "--max-retransmit", "0")
    device, _ = await node.core.devices.create("victim", token="TOKEN-1")
    clients = [await client_on(node) for _ in range(25)]
    for n, client in enumerate(clients):  # 25 ports x 120 tokens, registered and never acknowledged
        for t in range(120):
            client.send_raw(_build_observe(RPC, mid=(n * 1000 + t) & 0xFFFF, token=b"%d-%d" % (n, t)))
        await _until(lambda: len(client.received) == 120)  # paced: a socket buffer holds a few hundred
    assert node.observers.stats()["rpcObservations"] == 3000
    result = await node.core.rpc.submit(device.id, {"method": "m", "persistent": True, "timeout": 60000}, False)
    await _until(lambda: node.observers.stats()["rpcObservations"] == 0, timeout=60)  # generous: a busy machine
    deadline = reactor.seconds() + 30  # the last relation's end is written through the store queue
    while (rpc := await node.core.rpc.get(result["rpcId"])).status == "SENT" and reactor.seconds() < deadline:
        await sleep(0.02)
    assert rpc.status == "QUEUED"  # nobody took it: it waits for the next registration
    probe = await open_client(("127.0.0.1", node.coap_address[1]))
    answer = await probe.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"alive":1}')
    assert code_text(answer.code) == "2.01"
    for client in clients + [probe]:
        await client.port.stopListening()


def _build_observe(path, mid, token):
    from tests.coapclient import build

    return build(GET, path, mid=mid, token=token, observe=0)


async def _until(condition, timeout=30.0):
    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, "condition not reached in time"
        await sleep(0.02)


# -- starvation: per device, per address, in all -----------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_device_keeps_its_newest_relations(start_node, rest):
    node = await start_node("--max-device-observations", "3")
    await node.core.devices.create("d", token="TOKEN-1")
    client = await client_on(node)
    for n in range(5):
        answer = await observe(client, ATTRIBUTES, b"tok%d" % n)
        assert answer.opt.observe == 0
    stats = node.observers.stats()
    assert stats["attributeObservations"] == 3 and stats["replacedObservations"] == 2
    assert sorted(key[2] for key in node.coap.observations) == [b"tok2", b"tok3", b"tok4"]
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_one_address_cannot_lock_others_out(start_node):
    node = await start_node("--max-peer-observations", "20", "--max-device-observations", "100")
    await node.core.devices.create("attacker", token="TOKEN-1")
    await node.core.devices.create("other", token="OTHER")
    attacker = [await client_on(node) for _ in range(3)]  # one address, three ports
    answers = []
    for n in range(25):
        answers.append(await observe(attacker[n % 3], ATTRIBUTES, b"a%d" % n))
    codes = [code_text(a.code) for a in answers]
    assert codes[:20] == ["2.05"] * 20 and codes[20:] == ["5.03"] * 5
    assert max_age(answers[-1]) == 60 and b"too many observations" in answers[-1].payload
    # another address (and so another device's owner) still registers
    other = await client_on(node, "127.0.0.2")
    answer = await observe(other, "/api/v1/OTHER/attributes", b"o1")
    assert code_text(answer.code) == "2.05" and answer.opt.observe == 0
    assert node.coap.stats()["observationsRefusedPeer"] == 5
    for client in attacker + [other]:
        await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_node_wide_cap_answers_5_03_with_max_age(start_node):
    node = await start_node("--max-observations", "4")
    await node.core.devices.create("d", token="TOKEN-1")
    client = await client_on(node)
    codes = [code_text((await observe(client, ATTRIBUTES, b"t%d" % n)).code) for n in range(6)]
    assert codes == ["2.05"] * 4 + ["5.03"] * 2
    await client.port.stopListening()


# -- memory: merged notifications, byte budgets ---------------------------------------------

@pytest_twisted.ensureDeferred
async def test_changes_behind_an_unacknowledged_notification_merge(node, rest, device):
    client = await client_on(node)
    await set_shared(rest, device, {"a": 0})
    await observe(client, ATTRIBUTES, b"slow")
    for n in range(30):  # the device acknowledges nothing meanwhile
        await set_shared(rest, device, {"a": n, f"k{n % 3}": n})
    await rest.delete(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/SHARED_SCOPE?keys=k0")
    (observation,) = node.coap.observations.values()
    assert len(observation.queue) == 0 and observation.in_flight  # waiting changes are merged, not queued
    first = await client.receive()
    assert json.loads(first.payload) == {"a": 0, "k0": 0}
    client.send_raw(tx.Message(mtype=ACK, mid=first.mid, code=tx.EMPTY).encode())
    merged = await client.receive()
    assert json.loads(merged.payload) == {"a": 29, "k1": 28, "k2": 29}  # latest value per key
    client.send_raw(tx.Message(mtype=ACK, mid=merged.mid, code=tx.EMPTY).encode())
    deleted = await client.receive()
    assert json.loads(deleted.payload) == {"deleted": ["k0"]}
    assert merged.opt.observe == first.opt.observe + 1 and deleted.opt.observe == merged.opt.observe + 1
    await client.port.stopListening()


class Acknowledging(CoapClient):
    """A device that acknowledges every CON it gets."""

    def datagramReceived(self, data, addr):
        message = tx.Message.decode(data, addr)
        if message.mtype == CON:
            self.send_raw(tx.Message(mtype=ACK, mid=message.mid, code=tx.EMPTY).encode())
        super().datagramReceived(data, addr)


@pytest_twisted.ensureDeferred
async def test_waiting_notifications_have_a_byte_budget(start_node):
    node = await start_node("--notification-queue", "4KiB")
    device, _ = await node.core.devices.create("d", token="TOKEN-1")
    quick = Acknowledging(("127.0.0.1", node.coap_address[1]))
    quick.port = reactor.listenUDP(0, quick, interface="127.0.0.1")
    await observe(quick, RPC, b"q")
    stuck = await client_on(node)
    await observe(stuck, RPC, b"s")
    for n in range(30):  # each RPC is delivered through the quick relation; the stuck one queues them
        await node.core.rpc.submit(device.id, {"method": "m", "params": "x" * 200, "persistent": True}, False)
    await _until(lambda: node.coap.stats().get("observationsOverflowed") == 1)
    assert node.observers.stats()["rpcObservations"] == 1  # the quick relation goes on
    assert node.coap.notification_budget.used == 0  # the ended relation gave its bytes back
    assert node.coap.stats()["notificationBudgetRefusals"] >= 1
    await quick.port.stopListening()
    await stuck.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_large_answers_share_one_byte_budget(start_node, tmp_path):
    node = await start_node("--answer-cache", "256KiB")
    device, _ = await node.core.devices.create("d", token="TOKEN-1")
    big = {f"k{n}": "v" * 1000 for n in range(100)}  # about 100 KB of shared attributes
    await node.core.attributes.save(device.id, "SHARED_SCOPE", json.dumps(big).encode())
    clients = [await client_on(node) for _ in range(20)]
    for client in clients:  # block 0 from fresh ports: each keeps a whole answer for its later blocks
        answer = await client.request(GET, ATTRIBUTES + "", query=["sharedKeys=" + ",".join(big)], token=b"b")
        assert code_text(answer.code) == "2.05" and answer.opt.block2.more
    stats = node.coap.stats()
    assert stats["answerCacheBytes"] <= 256 * 1024 and stats["answerCacheEvictions"] > 0
    # a client whose cached answer was evicted still gets its later blocks, recomputed
    answer = await clients[0].request(GET, ATTRIBUTES, query=["sharedKeys=" + ",".join(big)], block2=(1, False, 6))
    assert code_text(answer.code) == "2.05" and answer.opt.block2.block_number == 1
    for client in clients:
        await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_answers_kept_for_duplicates_are_capped_in_bytes(start_node):
    node = await start_node("--answer-cache", "64KiB")
    device, _ = await node.core.devices.create("d", token="TOKEN-1")
    await node.core.attributes.save(device.id, "SHARED_SCOPE", json.dumps({"s": "x" * 900}).encode())
    client = await client_on(node)
    posted = await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"n":1}', mid=1)  # the oldest entry
    for mid in range(2, 202):  # 200 answers of about 950 bytes each: three times the budget
        assert code_text((await client.request(GET, ATTRIBUTES, mid=mid)).code) == "2.05"
    stats = node.coap.stats()
    assert stats["answerCacheBytes"] <= 64 * 1024 < 200 * 900
    assert stats["dedupAnswersDropped"] > 0 and stats["dedupEvictions"] == 0  # payloads went, keys stayed
    # a duplicate of the first GET, whose kept answer went, is answered again in full
    again = await client.request(GET, ATTRIBUTES, mid=2)
    assert code_text(again.code) == "2.05" and json.loads(again.payload) == {"shared": {"s": "x" * 900}}
    # the POST before them all is still known as a duplicate: answered, not stored twice
    duplicate = await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"n":1}', mid=1, token=posted.token)
    assert code_text(duplicate.code) == "2.01" and node.coap.stats()["duplicates"] == 2
    await client.port.stopListening()


# -- provisioning brute force ---------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_provisioning_is_limited_per_address_whatever_the_port(node):
    clients = [await client_on(node) for _ in range(11)]  # a new source port for every try
    body = b'{"deviceName":"x","provisionDeviceKey":"guess","provisionDeviceSecret":"guess"}'
    codes = [code_text((await c.request(POST, "/api/v1/provision", body)).code) for c in clients]
    assert codes[:10] == ["4.00"] * 10 and codes[10] == "4.29"  # the default: 10 in 60 s
    refused = await clients[0].request(POST, "/api/v1/provision", body)
    assert code_text(refused.code) == "4.29" and max_age(refused) >= 1
    other = await client_on(node, "127.0.0.3")  # another address is not held up
    assert code_text((await other.request(POST, "/api/v1/provision", body)).code) == "4.00"
    assert node.stats()["rateLimits"]["provision"]["refused"] == 2
    for client in clients + [other]:
        await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_rpc_id_beyond_64_bits_is_400(node, coap, device):
    answer = await coap.request(POST, "/api/v1/TOKEN-1/rpc/" + "9" * 5000, b"{}")
    assert code_text(answer.code) == "4.00" and answer.payload == b"rpc id out of range"
    answer = await coap.request(POST, "/api/v1/TOKEN-1/rpc/9223372036854775808", b"{}")
    assert code_text(answer.code) == "4.00"
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-1/rpc/9223372036854775807", b"{}")).code) == "2.01"
    padded = "0" * 5000 + "1"  # zero-padded: a small id, not a 5,000-digit number
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-1/rpc/" + padded, b"{}")).code) == "2.01"


@pytest_twisted.ensureDeferred
async def test_unfinished_uploads_are_capped_per_address(node, device):
    from tbcoap.coap.blockwise import MAX_PEER_UPLOADS

    clients = [await client_on(node) for _ in range(MAX_PEER_UPLOADS + 1)]
    first_block = b"{" + b" " * 1023
    codes = [code_text((await c.request(POST, "/api/v1/TOKEN-1/telemetry", first_block, block1=(0, True, 6))).code)
             for c in clients]  # each starts an upload and never finishes it
    assert codes == ["2.31"] * MAX_PEER_UPLOADS + ["5.03"]
    other = await client_on(node, "127.0.0.4")
    answer = await other.request(POST, "/api/v1/TOKEN-1/telemetry", first_block, block1=(0, True, 6))
    assert code_text(answer.code) == "2.31"
    assert node.coap.stats()["uploadsRefused"] == 1
    for client in clients + [other]:
        await client.port.stopListening()


