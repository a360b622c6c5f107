"""Fixtures for the webhook tests: a real HTTP endpoint, a real tbcoap node and a tiny CoAP client.

Fixture names start with ``webhook_`` so they cannot clash with other test folders.
"""

import itertools
from collections import namedtuple
import json
import random
import time
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.web import resource, server
from txthings import coap

import tbcoap
from tbcoap_webhook import WebhookPlugin

ADMIN_KEY = "k"
Post = namedtuple("Post", "code body headers at")


class Ingest(resource.Resource):
    """Records every POST; answers with the codes in ``answers`` (then 200), or never when ``hang``."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.posts = []    # Post(code or None when hung, parsed JSON body, {lowercase header: value}, time)
        self.answers = []  # codes for the next POSTs, in order
        self.hang = False
        self.hung = []     # requests left without an answer

    def render_POST(self, request):
        body = json.loads(request.content.read())
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        if self.hang:
            self.posts.append(Post(None, body, headers, time.monotonic()))
            self.hung.append(request)
            request.notifyFinish().addBoth(lambda _: self.hung.remove(request))
            return server.NOT_DONE_YET
        code = self.answers.pop(0) if self.answers else 200
        self.posts.append(Post(code, body, headers, time.monotonic()))
        request.setResponseCode(code)
        return b"{}"

    def delivered(self):
        """The bodies answered with 2xx, in order."""
        return [post.body for post in self.posts if post.code is not None and 200 <= post.code < 300]


class QuietSite(server.Site):
    """No access log: the tests check that the node's own log holds no secret."""

    def log(self, request):
        pass


class WebhookServer:
    def __init__(self):
        self.ingest = Ingest()
        self.port = reactor.listenTCP(0, QuietSite(self.ingest), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/ingest"

    async def close(self):
        for request in list(self.ingest.hung):
            request.loseConnection()
        await self.port.stopListening()


class CoapClient(protocol.DatagramProtocol):
    """Confirmable POSTs over real UDP; answers matched by token."""

    def __init__(self, server_address):
        self.server_address = server_address
        self.waiting = {}
        self.mids = itertools.count(random.randrange(60000))
        self.tokens = itertools.count(1)

    def datagramReceived(self, data, addr):
        message = coap.Message.decode(data, addr)
        if message.mtype == coap.CON:  # a separate answer: acknowledge it
            self.transport.write(coap.Message(mtype=coap.ACK, mid=message.mid, code=coap.EMPTY).encode(), addr)
        d = self.waiting.pop(message.token, None) if message.code != coap.EMPTY else None
        if d is not None:
            d.callback(message)

    def post(self, path, payload, timeout=5.0):
        """Deferred answer (a txthings Message) to ``POST path`` with a JSON ``payload`` (dict/list or bytes)."""
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
        token = next(self.tokens).to_bytes(4, "big")
        message = coap.Message(mtype=coap.CON, mid=next(self.mids) & 0xFFFF, code=coap.POST, payload=payload,
                               token=token)
        for segment in path.strip("/").split("/"):
            message.opt.addOption(coap.StringOption(coap.URI_PATH, segment.encode()))
        d = self.waiting[token] = defer.Deferred()
        self.transport.write(message.encode(), self.server_address)
        return d.addTimeout(timeout, reactor)


def code_text(message):
    return f"{message.code >> 5}.{message.code & 31:02d}"


async def until(predicate, timeout=5.0, step=0.01):
    """Wait until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await task.deferLater(reactor, step, lambda: None)


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def webhook_tools():
    """Helpers for the tests: ``until``, ``sleep``, ``code_text`` and the admin key."""
    return SimpleNamespace(until=until, sleep=sleep, code_text=code_text, admin_key=ADMIN_KEY)


@pytest_twisted.async_yield_fixture
async def webhook_server():
    """A local HTTP endpoint: ``.url``, ``.ingest.posts``, ``.ingest.answers``, ``.ingest.hang``."""
    endpoint = WebhookServer()
    yield endpoint
    await endpoint.close()


@pytest.fixture
def webhook_args(tmp_path):
    """Factory: make_service arguments for a node on free local ports (``rules`` and options added)."""

    def args(*options, rules="echo,webhook", url=None):
        out = ["--coap-port", "0", "--http-port", "0", "--coap-interface", "127.0.0.1",
               "--data-dir", str(tmp_path / "data"), "--admin-key", ADMIN_KEY, "--rules", rules]
        if url:
            out += ["--plugin-option", f"webhook.url={url}"]
        for option in options:
            out += ["--plugin-option", option]
        return out

    return args


@pytest_twisted.async_yield_fixture
async def webhook_node(webhook_server, webhook_args):
    """Factory: ``node = await webhook_node(*plugin_options, rules=..., url=...)``: a started node with a fresh
    WebhookPlugin posting to ``webhook_server``, device "d1" (token TOKEN-1) and a CoAP client, as
    ``node.service``, ``node.plugin``, ``node.device``, ``node.client``.  Stopped afterwards."""
    started = []

    async def start(*options, rules="echo,webhook", url=None):
        plugin = WebhookPlugin()
        args = webhook_args(*options, rules=rules, url=webhook_server.url if url is None else url)  # "": none
        service = tbcoap.make_service(args, plugins=[plugin])
        service.startService()
        client = CoapClient(("127.0.0.1", 0))
        started.append((service, client, reactor.listenUDP(0, client, interface="127.0.0.1")))
        await service.opened
        client.server_address = ("127.0.0.1", service.coap_address[1])
        device, _ = await service.core.devices.create("d1", token="TOKEN-1")
        return SimpleNamespace(service=service, plugin=plugin, device=device, client=client)

    yield start
    for service, _, port in started:
        if service.running:
            await service.stopService()
        await port.stopListening()
