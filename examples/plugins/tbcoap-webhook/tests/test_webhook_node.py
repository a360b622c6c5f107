"""A real tbcoap node with the plugin, real CoAP uploads over UDP and a real HTTP endpoint."""

import time

import pytest_twisted
import treq
from twisted.internet import protocol, reactor
from twisted.logger import formatEvent, globalLogPublisher
from txthings import coap

from tbcoap.models import now_ms

TELEMETRY = "api/v1/TOKEN-1/telemetry"
ATTRIBUTES = "api/v1/TOKEN-1/attributes"


def events(ingest):
    """Every delivered event, in order."""
    return [event for body in ingest.delivered() for event in body]


def stats(node):
    return node.service.stats()["plugins"]["webhook"]


@pytest_twisted.ensureDeferred
async def test_uploads_arrive_as_json_and_secrets_stay_out_of_the_log(webhook_node, webhook_server, webhook_tools):
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        node = await webhook_node("webhook.batch-wait=0.05", "webhook.header=Authorization: Bearer s3cret-h",
                                  url=webhook_server.url + "?key=s3cret-q")
        ts = 1_700_000_000_000
        answer = await node.client.post(TELEMETRY, [{"ts": ts, "values": {"temperature": 21.5, "cfg": {"a": [1]}}},
                                                    {"ts": ts + 1000, "values": {"temperature": 21.7, "ok": True}}])
        assert webhook_tools.code_text(answer) == "2.01"
        answer = await node.client.post(ATTRIBUTES, {"fw": "v1.2", "slots": 4})
        assert webhook_tools.code_text(answer) == "2.01"
        await webhook_tools.until(lambda: len(events(webhook_server.ingest)) == 2)
        await node.service.stopService()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    telemetry, attributes = events(webhook_server.ingest)
    device = node.device
    assert telemetry == {"type": "telemetry", "deviceId": device.id, "deviceName": "d1",
                         "entries": [{"ts": ts, "values": {"temperature": 21.5, "cfg": {"a": [1]}}},
                                     {"ts": ts + 1000, "values": {"temperature": 21.7, "ok": True}}]}
    assert abs(attributes.pop("ts") - now_ms()) < 60_000
    assert attributes == {"type": "attributes", "deviceId": device.id, "deviceName": "d1",
                          "values": {"fw": "v1.2", "slots": 4}}
    headers = webhook_server.ingest.posts[0].headers
    assert headers["content-type"] == "application/json" and headers["authorization"] == "Bearer s3cret-h"
    text = "\n".join(str(formatEvent(event)) for event in logged)
    assert "webhook: forwarding uploads to http://127.0.0.1" in text and "s3cret" not in text


@pytest_twisted.ensureDeferred
async def test_uploads_are_batched_in_order(webhook_node, webhook_server, webhook_tools):
    node = await webhook_node("webhook.batch-size=3", "webhook.batch-wait=0.5")
    for n in range(7):
        assert webhook_tools.code_text(await node.client.post(TELEMETRY, {"n": n})) == "2.01"
    await webhook_tools.until(lambda: len(events(webhook_server.ingest)) == 7)
    assert [len(body) for body in webhook_server.ingest.delivered()] == [3, 3, 1]
    assert [event["entries"][0]["values"]["n"] for event in events(webhook_server.ingest)] == list(range(7))
    await webhook_tools.until(lambda: stats(node)["sent"] == 7)  # the endpoint has it before the plugin hears back
    counters = stats(node)
    assert (counters["batches"], counters["sent"], counters["queued"]) == (3, 7, 0)


@pytest_twisted.ensureDeferred
async def test_a_hung_endpoint_never_delays_the_device(webhook_node, webhook_server, webhook_tools):
    webhook_server.ingest.hang = True
    node = await webhook_node("webhook.batch-size=1", "webhook.batch-wait=0.01", "webhook.shutdown-flush=0.3")
    for path, payload in [(TELEMETRY, {"t": 1}), (TELEMETRY, {"t": 2}), (ATTRIBUTES, {"a": 1})]:
        started = time.monotonic()
        answer = await node.client.post(path, payload)
        assert time.monotonic() - started < 0.4
        assert answer.mtype == coap.ACK and webhook_tools.code_text(answer) == "2.01"  # piggybacked: no delay
        await webhook_tools.until(lambda: len(webhook_server.ingest.posts) == 1)  # the first POST hangs
    assert (stats(node)["queued"], stats(node)["sent"]) == (3, 0)
    started = time.monotonic()
    await node.service.stopService()
    assert time.monotonic() - started < 2.0  # shutdown-flush bounds the stop
    assert (stats(node)["dropped"], stats(node)["queued"]) == (3, 0)


@pytest_twisted.ensureDeferred
async def test_server_errors_are_retried_with_backoff(webhook_node, webhook_server, webhook_tools):
    webhook_server.ingest.answers = [500, 503]
    node = await webhook_node("webhook.batch-wait=0.01", "webhook.backoff=0.1")
    await node.client.post(TELEMETRY, {"t": 1})
    await webhook_tools.until(lambda: len(webhook_server.ingest.delivered()) == 1)
    posts = webhook_server.ingest.posts
    assert [post.code for post in posts] == [500, 503, 200]
    assert posts[0].body == posts[1].body == posts[2].body
    assert posts[1].at - posts[0].at >= 0.1 and posts[2].at - posts[1].at >= 0.2  # doubling
    await webhook_tools.until(lambda: stats(node)["sent"] == 1)  # the endpoint has it before the plugin hears back
    counters = stats(node)
    assert (counters["retries"], counters["sent"], counters["failed"]) == (2, 1, 0)
    assert counters["lastError"] == "HTTP 503"


@pytest_twisted.ensureDeferred
async def test_a_400_is_not_retried(webhook_node, webhook_server, webhook_tools):
    webhook_server.ingest.answers = [400]
    node = await webhook_node("webhook.batch-wait=0.01", "webhook.backoff=0.05")
    await node.client.post(TELEMETRY, {"t": 1})
    await webhook_tools.until(lambda: stats(node)["failed"] == 1)
    await node.client.post(TELEMETRY, {"t": 2})
    await webhook_tools.until(lambda: stats(node)["sent"] == 1)
    await webhook_tools.sleep(0.2)
    assert [post.code for post in webhook_server.ingest.posts] == [400, 200]
    counters = stats(node)
    assert (counters["retries"], counters["failed"], counters["lastError"]) == (0, 1, "HTTP 400")


@pytest_twisted.ensureDeferred
async def test_a_full_queue_drops_and_the_stats_say_so(webhook_node, webhook_server, webhook_tools):
    webhook_server.ingest.hang = True
    node = await webhook_node("webhook.queue-size=2", "webhook.batch-size=1", "webhook.shutdown-flush=0")
    for n in range(4):
        assert webhook_tools.code_text(await node.client.post(TELEMETRY, {"n": n})) == "2.01"
    assert (stats(node)["queued"], stats(node)["dropped"]) == (2, 2)
    response = await treq.get(f"http://127.0.0.1:{node.service.http_address[1]}/api/admin/stats",
                              headers={"X-Authorization": f"Bearer {webhook_tools.admin_key}"})
    assert response.code == 200
    shown = (await response.json())["plugins"]["webhook"]
    assert (shown["queued"], shown["dropped"], shown["sent"], shown["lastError"]) == (2, 2, 0, None)
    await node.service.stopService()
    assert (stats(node)["dropped"], stats(node)["queued"]) == (4, 0)


@pytest_twisted.ensureDeferred
async def test_stopping_flushes_what_is_queued(webhook_node, webhook_server, webhook_tools):
    node = await webhook_node("webhook.batch-wait=60")
    for n in range(3):
        await node.client.post(TELEMETRY, {"n": n})
    await webhook_tools.sleep(0.1)
    assert webhook_server.ingest.posts == [] and stats(node)["queued"] == 3
    await node.service.stopService()
    assert [len(body) for body in webhook_server.ingest.delivered()] == [3]
    counters = stats(node)
    assert (counters["sent"], counters["queued"], counters["dropped"]) == (3, 0, 0)


@pytest_twisted.ensureDeferred
async def test_a_post_without_answer_times_out_and_its_connection_is_closed(webhook_node, webhook_server,
                                                                           webhook_tools):
    webhook_server.ingest.hang = True
    node = await webhook_node("webhook.batch-wait=0.01", "webhook.timeout=0.2", "webhook.retries=1",
                              "webhook.backoff=0.05")
    await node.client.post(TELEMETRY, {"t": 1})
    await webhook_tools.until(lambda: stats(node)["failed"] == 1)
    assert len(webhook_server.ingest.posts) == 2 and stats(node)["retries"] == 1
    assert stats(node)["lastError"] == "no answer within 0.2 s"
    await webhook_tools.until(lambda: webhook_server.ingest.hung == [])  # both connections were dropped


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_retried_then_given_up(webhook_node, webhook_tools):
    closed = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
    port = closed.getHost().port
    await closed.stopListening()
    node = await webhook_node("webhook.batch-wait=0.01", "webhook.retries=2", "webhook.backoff=0.05",
                              url=f"http://127.0.0.1:{port}/ingest")
    await node.client.post(ATTRIBUTES, {"a": 1})
    await webhook_tools.until(lambda: stats(node)["failed"] == 1)
    assert stats(node)["retries"] == 2 and "ConnectionRefused" in stats(node)["lastError"]
