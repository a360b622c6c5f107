"""One WebSocket connection's commands, once its key is known: subscriptions by ``cmdId``, each a
``tbcoap.services.live.Subscription``, and one-off history reads.  Knows nothing of autobahn: it
is given ``send(message)`` (a dict; False when the message was too large to queue) and is closed
with the connection."""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from tbcoap.errors import BadRequest, NotFound, StoreUnavailable, TbcoapError
from tbcoap.services.live import ATTRIBUTES, TIMESERIES, Subscription
from tbcoap.websocket import entitydata
from tbcoap.websocket.reads import DEFAULT_LIMIT, read_points
from tbcoap.websocket.commands import (BAD_REQUEST, INTERNAL_ERROR, LATEST_TELEMETRY, UNAUTHORIZED, BadCommand,
                                       error, update)

log = Logger()



class Session:
    """The subscriptions of one connection (at most ``max_subscriptions``)."""

    def __init__(self, core, principal, send, max_subscriptions=1000):
        self.core, self.principal, self.send = core, principal, send
        self.max_subscriptions = max_subscriptions
        self.subs = {}  # cmdId -> Subscription, or an entitydata.EntityData (several subscriptions)
        self.closed = False

    @property
    def size(self):
        return sum(getattr(s, "size", 1) for s in self.subs.values())

    def handle(self, commands):
        """Run the commands of one message, in order."""
        for command in commands:
            d = defer.maybeDeferred(self._run, command)
            d.addErrback(self._failed, command)

    def _failed(self, failure, command):
        if self.closed:
            return
        if failure.check(BadCommand, BadRequest):
            code, message = BAD_REQUEST, failure.getErrorMessage()
        elif failure.check(NotFound):
            code, message = UNAUTHORIZED, "Unauthorized"
        elif failure.check(StoreUnavailable, TbcoapError):
            code, message = INTERNAL_ERROR, failure.getErrorMessage()
        else:
            log.failure("websocket command {kind} failed", failure, kind=command.kind)
            code, message = INTERNAL_ERROR, "Internal Server error!"
        if command.kind.startswith("ENTITY_DATA"):
            self.send(entitydata.message(command.cmd_id, code=code, error=message))
        else:
            self.send(error(command.cmd_id, code, message))

    def _run(self, command):
        if command.kind == "TIMESERIES_HISTORY":
            return self._history(command)
        if command.kind == "ENTITY_DATA":
            return entitydata.start(self, command)
        if command.kind == "ENTITY_DATA_UNSUBSCRIBE":
            return self.end(command.cmd_id)
        if command.body.get("unsubscribe"):
            if not command.text("entityId"):  # as ThingsBoard: no entity, every subscription goes
                return self.close()
            return self.end(command.cmd_id)
        return self._subscribe(command)

    def end(self, cmd_id):
        """Stop the subscription ``cmd_id`` (nothing if there is none)."""
        held = self.subs.pop(cmd_id, None)
        if isinstance(held, Subscription):
            self.core.live.close(held)
        elif held is not None:
            held.stop()

    def close(self):
        """The connection ended (or the client unsubscribed everything): every subscription stops."""
        for cmd_id in list(self.subs):
            self.end(cmd_id)

    def room(self, cmd_id, wanted=1):
        """BadCommand unless ``wanted`` more subscriptions fit on this connection."""
        if self.size + wanted > self.max_subscriptions:
            raise BadCommand(f"at most {self.max_subscriptions} subscriptions on one connection", cmd_id)

    @defer.inlineCallbacks
    def device(self, device_id):
        """The device if this key may see it, else NotFound (answered "Unauthorized")."""
        device = yield self.core.devices.get(device_id)
        if not self.principal.may_act_for(device.customer_id):
            raise NotFound(device_id)
        return device

    def may_see(self, device):
        return self.principal.may_act_for(device.customer_id)

    def subscription(self, device_id, kind, cmd_id, deliver, keys=None, scope=None, latest_only=False):
        """A Subscription whose end is told to the client as an error update of ``cmd_id``."""
        def ended(code, message):
            held = self.subs.get(cmd_id)
            if held is sub:
                del self.subs[cmd_id]
                self.send(error(cmd_id, code, message))
            elif isinstance(held, entitydata.EntityData) and sub in held.subs:
                held.subs.remove(sub)  # the query's other devices go on
                self.send(entitydata.message(cmd_id, code=code, error=message))

        sub = Subscription(device_id, kind, deliver, ended, self.may_see, keys=keys, scope=scope,
                           latest_only=latest_only)
        return sub

    @defer.inlineCallbacks
    def _subscribe(self, command):
        cmd_id = command.cmd_id
        device_id = command.device_id()
        keys = command.keys()
        kind = TIMESERIES if command.kind == "TIMESERIES" else ATTRIBUTES
        scope = command.scope() if kind == ATTRIBUTES else None
        window = command.number("timeWindow") if kind == TIMESERIES else 0
        first = None
        if window > 0:
            start = command.number("startTs")
            first = self._reader(command, device_id, keys, start, start + window)
        self.end(cmd_id)  # the same cmdId again replaces its subscription, as in ThingsBoard
        self.room(cmd_id)
        sub = self.subscription(device_id, kind, cmd_id, lambda data: self.send(update(cmd_id, data)), keys=keys,
                                scope=scope, latest_only=kind == TIMESERIES and command.text("scope") == LATEST_TELEMETRY)
        self.subs[cmd_id] = sub  # its place is taken now, while the device is looked up
        try:
            yield self.device(device_id)
            if self.closed or self.subs.get(cmd_id) is not sub:
                return
            yield self.core.live.open(sub, first)
        except BaseException:
            if self.subs.get(cmd_id) is sub:
                del self.subs[cmd_id]
            self.core.live.close(sub)
            raise

    @defer.inlineCallbacks
    def _history(self, command):
        device_id = command.device_id()
        keys = command.keys()
        if keys is None:
            raise BadCommand("Keys are empty!", command.cmd_id)
        read = self._reader(command, device_id, keys, command.number("startTs"), command.number("endTs"))
        yield self.device(device_id)
        data = yield read()
        if not self.closed:
            self.send(update(command.cmd_id, data))

    def _reader(self, command, device_id, keys, start, end):
        """A function reading the points of ``keys`` (None: every key) in [start, end] as the command
        asks (``limit``, ``agg``, ``interval``): ``{key: [(ts, value)]}``, newest first."""
        limit = command.number("limit") or DEFAULT_LIMIT
        agg = command.aggregation()
        interval = command.number("interval")
        return lambda: read_points(self.core, self.principal.caller, device_id, keys, start, end, limit, agg,
                                   interval)
