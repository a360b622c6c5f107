"""Client-side RPC through rule plugins, and rules seeing uploads."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.python import usage

from tbcoap.hookspecs import hookimpl
from tbcoap.service import Options
from tests.coapclient import POST, code_text, open_client

RPC = "/api/v1/TOKEN-1/rpc"


async def client_for(node):
    await node.core.devices.create("d", token="TOKEN-1")
    return await open_client(("127.0.0.1", node.coap_address[1]))


@pytest_twisted.ensureDeferred
async def test_echo_rule_answers_with_the_request(node, coap, device):
    answer = await coap.request(POST, RPC, b'{ "method" : "getTime", "params" : {"a": [1, 2.50]} }')
    assert code_text(answer.code) == "2.05" and answer.opt.content_format == 50
    assert answer.payload == b'{"method":"getTime","params":{"a":[1,2.5]}}'


@pytest.mark.parametrize("payload", [b'{"params":1}', b'{"method":""}', b'{"method":3}', b"[1]", b"{"])
@pytest_twisted.ensureDeferred
async def test_client_rpc_without_method_is_400(node, coap, device, payload):
    assert code_text((await coap.request(POST, RPC, payload)).code) == "4.00"


@pytest_twisted.ensureDeferred
async def test_no_rule_is_501_at_once(start_node):
    node = await start_node("--rules", "none")
    client = await client_for(node)
    answer = await client.request(POST, RPC, b'{"method":"m"}')
    assert code_text(answer.code) == "5.01" and answer.payload
    await client.port.stopListening()


class Rule:
    """A rule plugin whose client-RPC answer is chosen by the test."""

    name = "mine"

    def __init__(self, answer=None, error=None, delay=None):
        self.answer, self.error, self.delay, self.seen = answer, error, delay, []

    @hookimpl
    def tbcoap_client_rpc(self, device, request):
        self.seen.append(("rpc", device.name, request))
        if self.error:
            raise self.error
        if self.delay:
            return task.deferLater(reactor, self.delay, lambda: self.answer)
        return self.answer

    @hookimpl
    def tbcoap_telemetry_uploaded(self, device, entries):
        self.seen.append(("telemetry", device.name, [(k, v) for _, k, v in entries]))

    @hookimpl
    def tbcoap_attributes_uploaded(self, device, values):
        self.seen.append(("attributes", device.name, values))


def node_with_rule(start_node, rule, *args):
    return start_node("--rules", "mine,echo", *args, plugins=[rule])


@pytest_twisted.ensureDeferred
async def test_hook_client_rpc(start_node):
    """tbcoap_client_rpc: the enabled rules are asked in --rules order."""
    first = Rule(answer={"from": "mine"})
    node = await node_with_rule(start_node, first)
    client = await client_for(node)
    answer = await client.request(POST, RPC, b'{"method":"m"}')
    assert json.loads(answer.payload) == {"from": "mine"}
    first.answer = None  # "not mine": the next rule (echo) answers
    answer = await client.request(POST, RPC, b'{"method":"n"}')
    assert json.loads(answer.payload) == {"method": "n"}
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_failing_rule_is_500(start_node):
    node = await node_with_rule(start_node, Rule(error=RuntimeError("rule bug")))
    client = await client_for(node)
    answer = await client.request(POST, RPC, b'{"method":"m"}')
    assert code_text(answer.code) == "5.00" and answer.payload == b"internal server error"
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_slow_rule_is_503(start_node):
    node = await node_with_rule(start_node, Rule(answer=1, delay=1.0), "--rule-timeout", "0.2")
    client = await client_for(node)
    answer = await client.request(POST, RPC, b'{"method":"m"}')
    assert code_text(answer.code) == "5.03" and b"mine" in answer.payload
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_hook_telemetry_uploaded(start_node):
    """tbcoap_telemetry_uploaded: a rule sees committed telemetry, not a rejected upload."""
    rule = Rule()
    node = await node_with_rule(start_node, rule)
    client = await client_for(node)
    await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"t":1.5}')
    await client.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"t":')  # rejected: not seen
    assert rule.seen == [("telemetry", "d", [("t", 1.5)])]
    await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_hook_attributes_uploaded(start_node):
    """tbcoap_attributes_uploaded: a rule sees committed client attributes, not a rejected upload."""
    rule = Rule()
    node = await node_with_rule(start_node, rule)
    client = await client_for(node)
    await client.request(POST, "/api/v1/TOKEN-1/attributes", b'{"fw":"v2"}')
    await client.request(POST, "/api/v1/TOKEN-1/attributes", b'["not an object"]')  # rejected: not seen
    assert rule.seen == [("attributes", "d", {"fw": "v2"})]
    await client.port.stopListening()


def test_unknown_rule_is_a_usage_error():
    with pytest.raises(usage.UsageError, match=r"unknown rule nope \(available: echo"):
        Options().parseOptions(["--rules", "nope"])
