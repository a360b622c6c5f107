"""A WebSocket client for tests, on autobahn's Twisted client: ``await connect(url)`` gives a
client whose ``send(obj)`` sends JSON and ``await next()`` gives the next JSON message."""

from __future__ import annotations

import json

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, reactor


class _Protocol(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.client.protocol = self
        self.factory.opened.callback(self.factory.client)

    def onMessage(self, payload, isBinary):
        self.factory.client.messages.put(json.loads(payload))

    def onClose(self, wasClean, code, reason):
        client = self.factory.client
        client.close_code, client.close_reason = code, reason
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"refused: {code} {reason}"))
        client.closed.callback((code, reason)) if not client.closed.called else None


class Client:
    def __init__(self):
        self.messages = defer.DeferredQueue()
        self.closed = defer.Deferred()
        self.protocol = None
        self.close_code = self.close_reason = None

    def send(self, message):
        self.protocol.sendMessage(json.dumps(message).encode())

    def next(self, timeout=5.0):
        d = self.messages.get()
        return d.addTimeout(timeout, reactor)

    async def until(self, predicate, timeout=5.0):
        """The next message for which ``predicate(message)`` is true (others are skipped)."""
        while True:
            message = await self.next(timeout)
            if predicate(message):
                return message

    def close(self):
        if self.protocol is not None and self.protocol.state == self.protocol.STATE_OPEN:
            self.protocol.sendClose(1000)
        return self.closed


async def connect(url, timeout=5.0):
    """An open Client (ConnectionError if the handshake is refused)."""
    factory = WebSocketClientFactory(url)
    factory.protocol = _Protocol
    factory.client = Client()
    factory.opened = defer.Deferred()
    connectWS(factory)
    return await factory.opened.addTimeout(timeout, reactor)
