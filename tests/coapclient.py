"""A small raw CoAP client for tests: real UDP, full control of type, MID, token and options.

Requests are encoded with txThings' message model; answers are decoded by
txThings, not by tbcoap's own decoder, so the tests do not grade tbcoap's
code with itself.
"""

from __future__ import annotations

import itertools
import os
import random

from twisted.internet import defer, protocol, reactor
from txthings import coap

from tbcoap.coap.codec import BlockOption

CON, NON, ACK, RST = coap.CON, coap.NON, coap.ACK, coap.RST
GET, POST, PUT, DELETE = coap.GET, coap.POST, coap.PUT, coap.DELETE


def code_text(code):
    return f"{code >> 5}.{code & 31:02d}"


def build(method, path, payload=b"", *, mtype=CON, mid=0, token=b"", query=(), content_format=None,
          observe=None, block1=None, block2=None, extra_options=()):
    """Encode a request; ``path`` is "/a/b", ``query`` a list of "k=v" strings."""
    message = coap.Message(mtype=mtype, mid=mid, code=method, payload=payload, token=token)
    for segment in [s for s in path.split("/") if s]:
        message.opt.addOption(coap.StringOption(coap.URI_PATH, segment.encode()))
    for item in query:
        message.opt.addOption(coap.StringOption(coap.URI_QUERY, item.encode()))
    if content_format is not None:
        message.opt.content_format = content_format
    if observe is not None:
        message.opt.observe = observe
    if block1 is not None:
        message.opt.addOption(BlockOption(coap.BLOCK1, block1))
    if block2 is not None:
        message.opt.addOption(BlockOption(coap.BLOCK2, block2))
    for number, value in extra_options:
        message.opt.addOption(coap.OpaqueOption(number, value))
    return message.encode()


class CoapClient(protocol.DatagramProtocol):
    """Sends datagrams to one server and queues what comes back."""

    def __init__(self, server):
        self.server = server
        self.queue = defer.DeferredQueue()
        self.received = []
        self._mids = itertools.count(random.randrange(0, 60000))

    def datagramReceived(self, data, addr):
        message = coap.Message.decode(data, addr)
        self.received.append(message)
        self.queue.put(message)

    def next_mid(self):
        return next(self._mids) & 0xFFFF

    def send_raw(self, data):
        self.transport.write(data, self.server)

    def receive(self, timeout=5.0):
        """The next datagram from the server (Deferred), failing after ``timeout``."""
        return self.queue.get().addTimeout(timeout, reactor)

    @defer.inlineCallbacks
    def silence(self, seconds=0.3):
        """True if nothing arrives within ``seconds``."""
        yield deferLater(seconds)
        return len(self.queue.pending) == 0

    @defer.inlineCallbacks
    def request(self, method, path, payload=b"", *, mtype=CON, timeout=5.0, **options):
        """Send a request and fire with the response of the same token.

        An empty ACK on the way is acknowledged silently (it stays in
        ``received``); a separate CON response is ACKed as a client must.
        """
        if isinstance(payload, str):
            payload = payload.encode()
        token = options.pop("token", None) or os.urandom(4)
        mid = options.pop("mid", None)
        mid = self.next_mid() if mid is None else mid
        self.send_raw(build(method, path, payload, mtype=mtype, mid=mid, token=token, **options))
        while True:
            message = yield self.receive(timeout)
            if message.code == coap.EMPTY:
                continue
            if message.token != token:
                continue
            if message.mtype == CON:
                self.send_raw(coap.Message(mtype=ACK, mid=message.mid, code=coap.EMPTY).encode())
            return message


def deferLater(seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def open_client(address):
    """A CoapClient bound to an ephemeral local port, talking to ``address`` (host, port)."""
    client = CoapClient(address)
    port = reactor.listenUDP(0, client, interface="127.0.0.1")
    client.port = port
    yield None
    return client
