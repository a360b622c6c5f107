"""ThingsBoard's WebSocket API on the HTTP port, on autobahn's Twisted WebSocket.

``/api/ws/plugins/telemetry`` (ThingsBoard 3) and ``/api/ws`` (ThingsBoard 4) upgrade to a
WebSocket.  The key comes in the query (``?token=KEY``: checked in the handshake, 401 if wrong) or
in the first message's ``authCmd`` (``{"authCmd": {"cmdId": 0, "token": KEY}}``, ThingsBoard 4's
``apiKey`` too): a connection without one gets AUTH_TIMEOUT seconds to send it.  Limits: the
connections of one key (the handshake is refused 429 beyond), connections waiting for their key
(MAX_PENDING, 503 beyond), subscriptions per connection and on the node (errorCode 2), a message
in of MAX_MESSAGE bytes, and the updates waiting for a slow reader: what the socket does not take
(Twisted pauses its producer) waits in a queue of at most ``ws-max-queue`` bytes, and a reader
that lets it grow past that is closed with 1008 "Max pending updates limit reached!", as
ThingsBoard closes it.  A deleted customer's connections close at once (1008).
"""

from __future__ import annotations

from collections import deque

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from tbcoap.errors import ShuttingDown, Unauthorized
from tbcoap.events import CustomerGone
from tbcoap.rest.auth import principal_of
from tbcoap.websocket.commands import BAD_REQUEST, BadCommand, encode, error, parse
from tbcoap.websocket.session import Session

log = Logger()

PATHS = (b"/api/ws", b"/api/ws/plugins/telemetry")
AUTH_TIMEOUT = 10.0  # seconds a connection may take to send its authCmd (ThingsBoard's auth_timeout_ms)
MAX_PENDING = 256  # connections waiting for their key, on the node
MAX_MESSAGE = 65536  # bytes of one message from a client
POLICY_VIOLATION, BAD_DATA, UNSUPPORTED = 1008, 1007, 1003


@implementer(IPushProducer)
class _Flow:
    """The transport's producer: Twisted pauses it when the socket's buffer is full."""

    def __init__(self, protocol):
        self.protocol = protocol

    def pauseProducing(self):
        self.protocol.paused = True

    def resumeProducing(self):
        self.protocol.paused = False
        self.protocol.drain()

    def stopProducing(self):
        self.protocol.paused = True


class LiveProtocol(WebSocketServerProtocol):
    """One WebSocket connection: its key, its Session and its queue of updates."""

    principal = None
    session = None
    paused = False
    _auth_timer = None
    _pending = False
    _waiting = None  # messages that came while the key of an authCmd was checked

    def onConnect(self, request):
        hub = self.factory.hub
        self.v4 = request.path == "/api/ws"
        self.queue, self.queued = deque(), 0
        token = (request.params.get("token") or [None])[0]
        if token:
            return hub.admit(token).addCallbacks(self._admitted, _deny)
        if hub.pending >= MAX_PENDING:
            hub.counters["refused"] += 1
            raise ConnectionDeny(503, "too many connections waiting for their key")
        hub.pending += 1
        self._pending = True
        return None

    def _admitted(self, principal):
        self.principal = principal
        return None

    def onOpen(self):
        transport = self.transport
        if transport.producer is not None:  # twisted.web's channel, until this upgrade
            transport.unregisterProducer()
        transport.registerProducer(_Flow(self), True)
        hub = self.factory.hub
        if self.principal is not None:
            self._start()
        else:
            self._auth_timer = hub.reactor.callLater(AUTH_TIMEOUT, self._close, POLICY_VIOLATION,
                                                      "Auth cmd is missing")

    def _start(self):
        hub = self.factory.hub
        hub.opened(self)
        self.session = Session(hub.node.core, self.principal, self.send,
                               hub.settings.get("ws-max-subscriptions-per-connection", 1000))

    def onMessage(self, payload, isBinary):
        if isBinary:
            return self._close(UNSUPPORTED, "text messages only (JSON commands)")
        text = payload.decode("utf-8", "replace")
        if self._waiting is not None:
            if len(self._waiting) >= 16:
                return self._close(POLICY_VIOLATION, "too many messages before the key was checked")
            self._waiting.append(text)
            return
        if self.session is None:
            return self._authenticate(text)
        self._commands(text)

    def _commands(self, text):
        try:
            _auth, commands = parse(text)
        except BadCommand as exc:
            self.send(error(exc.cmd_id or 1, BAD_REQUEST, str(exc)))
            return
        self.session.handle(commands)

    def _authenticate(self, text):
        try:
            auth, _ = parse(text)
        except BadCommand as exc:
            return self._close(BAD_DATA, str(exc))
        key = auth and (auth.get("apiKey") or auth.get("token"))
        if not isinstance(key, str) or not key:
            return self._close(POLICY_VIOLATION, "Auth cmd is missing")
        self._waiting = [text]
        self.factory.hub.admit(key).addCallbacks(self._authenticated, self._refused)

    def _authenticated(self, principal):
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._unpend()
        if self.state != self.STATE_OPEN:
            self.factory.hub.released(principal)
            return
        self.principal = principal
        self._start()
        waiting, self._waiting = self._waiting, None
        for text in waiting:
            self._commands(text)

    def _refused(self, failure):
        self._waiting = None
        self._close(BAD_DATA if failure.check(Unauthorized) else POLICY_VIOLATION, failure.getErrorMessage())

    def send(self, message) -> bool:
        """Queue one update; False (and an error update instead) when it alone is larger than the
        queue may hold.  A reader that lets the queue outgrow its limit is closed."""
        if self.state != self.STATE_OPEN:
            return False
        data = encode(message)
        limit = self.factory.hub.max_queue
        if len(data) > limit:
            cmd_id = message.get("subscriptionId", message.get("cmdId", 0))
            data = encode(error(cmd_id, BAD_REQUEST, f"the answer is over {limit} bytes: ask for fewer keys or points"))
        if self.paused or self.queue:
            self.queue.append(data)
            self.queued += len(data)
            if self.queued > limit:
                self.factory.hub.counters["overflowed"] += 1
                self.queue.clear()
                self.queued = 0
                self._close(POLICY_VIOLATION, "Max pending updates limit reached!", abort=True)
                return False
            return True
        self._send(data)
        return True

    def drain(self):
        while self.queue and not self.paused and self.state == self.STATE_OPEN:
            data = self.queue.popleft()
            self.queued -= len(data)
            self._send(data)

    def _send(self, data):
        """sendMessage without autobahn's message limit, which it applies to what it sends as well as
        to what it reads: a client's messages stay within MAX_MESSAGE, updates within ``ws-max-queue``."""
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(data)
        finally:
            self.maxMessagePayloadSize = limit

    def _close(self, code, reason, abort=False):
        """Close with ``code`` (ThingsBoard's 1007, 1008: autobahn's sendClose takes only 1000 and
        3000-4999 from applications, so the close frame is sent one level lower)."""
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
        if abort:
            self.dropConnection(abort=True)

    def onClose(self, wasClean, code, reason):
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._unpend()
        if self.session is not None:
            self.session.closed = True
            self.session.close()
            self.factory.hub.closed(self)
        elif self.principal is not None:  # admitted at the handshake, never opened
            self.factory.hub.released(self.principal)

    def _unpend(self):
        if self._pending:
            self._pending = False
            self.factory.hub.pending -= 1


def _deny(failure):
    if failure.check(ConnectionDeny):
        return failure
    if failure.check(Unauthorized):
        raise ConnectionDeny(401, failure.getErrorMessage())
    if failure.check(ShuttingDown):
        raise ConnectionDeny(503, failure.getErrorMessage())
    log.failure("websocket key check failed", failure)
    raise ConnectionDeny(500, "the key could not be checked")


class Hub:
    """The node's WebSocket connections: how many each key holds, the ones waiting for their key,
    and the bus events that close connections (a deleted customer)."""

    def __init__(self, node):
        self.node, self.reactor, self.settings = node, node.reactor, node.settings
        self.max_per_key = self.settings.get("ws-max-connections-per-key", 64)
        self.max_queue = self.settings.get("ws-max-queue", 1 << 20)
        self.per_key = {}  # caller -> open connections (and handshakes admitted)
        self.by_customer = {}  # customer id -> {protocol: None}
        self.pending = 0
        self.counters = {"opened": 0, "refused": 0, "overflowed": 0}
        node.core.bus.subscribe(self._on_event)

    @defer.inlineCallbacks
    def admit(self, key):
        """The Principal of ``key`` if it may open one more connection (ConnectionDeny if not)."""
        principal = yield principal_of(key, self.node)
        if principal.role not in ("admin", "customer"):
            self.counters["refused"] += 1
            raise ConnectionDeny(403, "this key may not subscribe")
        held = self.per_key.get(principal.caller, 0)
        if held >= self.max_per_key:
            self.counters["refused"] += 1
            raise ConnectionDeny(429, f"this key holds {self.max_per_key} WebSocket connections already")
        self.per_key[principal.caller] = held + 1
        return principal

    def released(self, principal):
        left = self.per_key.get(principal.caller, 1) - 1
        if left > 0:
            self.per_key[principal.caller] = left
        else:
            self.per_key.pop(principal.caller, None)

    def opened(self, protocol):
        self.counters["opened"] += 1
        if protocol.principal.role == "customer":
            self.by_customer.setdefault(protocol.principal.customer_id, {})[protocol] = None

    def closed(self, protocol):
        self.released(protocol.principal)
        members = self.by_customer.get(protocol.principal.customer_id)
        if members is not None:
            members.pop(protocol, None)
            if not members:
                del self.by_customer[protocol.principal.customer_id]

    def _on_event(self, event):
        if isinstance(event, CustomerGone):
            for protocol in list(self.by_customer.get(event.customer_id, ())):
                protocol._close(POLICY_VIOLATION, "Unauthorized: the customer was deleted")

    def stats(self):
        return {"connections": sum(self.per_key.values()), "waitingForKey": self.pending,
                "subscriptions": self.node.core.live.count(), **self.counters}


class LiveResource(WebSocketResource):
    """The twisted.web resource of both paths; the upgrade request goes to the access log (its
    query's key masked, as every token is) before autobahn takes the connection over."""

    def render(self, request):
        request.setResponseCode(101)
        site = getattr(request, "site", None)
        if site is not None:
            site.log(request)
        return super().render(request)


def make_resource(node):
    """``(resource, hub)`` serving ThingsBoard's WebSocket paths for ``node``."""
    hub = Hub(node)
    factory = WebSocketServerFactory()
    factory.protocol = LiveProtocol
    factory.hub = hub
    factory.setProtocolOptions(maxFramePayloadSize=MAX_MESSAGE, maxMessagePayloadSize=MAX_MESSAGE,
                               openHandshakeTimeout=10, closeHandshakeTimeout=5, autoPingInterval=30,
                               autoPingTimeout=30, failByDrop=False)
    return LiveResource(factory), hub
