"""Server-side RPC (docs/device-api.md, docs/rest-api.md): queue, per-device ids, delivery, expiry, replies.

Every RPC lives in the store with its status; this service only keeps what
cannot be stored: the REST callers waiting for an answer, the expiry timers
and the channels to devices observing ``/rpc`` on this node.  One RPC per
device is in flight at a time, in the order of their ids.
"""

from __future__ import annotations

import json
from collections import Counter

from twisted.internet import defer
from twisted.logger import Logger

from tbcoap.errors import BadRequest, GatewayTimeout, NotFound, RpcFailed, ShuttingDown, TooMany
from tbcoap.models import RPC_FINAL, Rpc, compact_json, new_id, now_ms
from tbcoap.events import DeviceGone, Resync, RpcChanged

log = Logger()

_VERB = {"EXPIRED": "was not delivered", "TIMEOUT": "got no reply"}
DEFAULT_TIMEOUT_MS = 10_000
MIN_TIMEOUT_MS = 5_000


def parse_request(body) -> dict:
    """Validate a REST RPC body; ``{"method","params_json","expiration_time","persistent"}``."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    method = body.get("method")
    if not isinstance(method, str) or not method:
        raise BadRequest("method must be a non-empty string")
    timeout = body.get("timeout", DEFAULT_TIMEOUT_MS)
    expiration = body.get("expirationTime")
    persistent = body.get("persistent", False)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise BadRequest("timeout must be a positive number of milliseconds")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int)):
        raise BadRequest("expirationTime must be milliseconds since the epoch")
    if not isinstance(persistent, bool):
        raise BadRequest("persistent must be true or false")
    now = now_ms()
    return {
        "method": method,
        "params_json": compact_json(body.get("params")),
        "expiration_time": expiration if expiration is not None else now + max(int(timeout), MIN_TIMEOUT_MS),
        "persistent": persistent,
        "created_time": now,
    }


class RpcService:
    """Queues RPCs, delivers them to observing devices, and answers the callers."""

    def __init__(self, store, bus, clock=None, max_queued=100):
        from twisted.internet import reactor

        self.store = store
        self.bus = bus
        self.max_queued = max_queued  # RPCs not yet final per device (TooMany beyond)
        self.power = None  # the PowerService: a sleeping device's RPCs wait for its window
        self.refused = 0  # RPCs refused: their device had max_queued waiting
        self.clock = clock or reactor
        self._channels = {}   # device_id -> {channel: None}: objects with send(json_bytes, on_result)
        self._busy = set()    # devices with a delivery under way
        self._again = set()   # devices asked for while busy: look again when done
        self._waiters = {}    # rpc_id -> [(Deferred, oneway)]
        self._timers = {}     # rpc_id -> DelayedCall
        self._rpc_device = {}    # rpc_id -> device_id of the RPCs with a timer or a waiter
        self._device_rpcs = {}   # device_id -> {rpc_id} of those: what a deletion ends, found in O(1)
        self._running = False
        self.status_changes = Counter()  # status -> RPCs that entered it here (for /metrics)
        bus.subscribe(self._on_event)

    # -- callers --------------------------------------------------------------

    @defer.inlineCallbacks
    def submit(self, device_id, body, oneway):
        """Queue an RPC.  Persistent: fires ``{"rpcId"}`` at once.  Otherwise fires the
        final ``Rpc`` when delivered (one-way) or answered (two-way); GatewayTimeout if it expires."""
        if not self._running:
            raise ShuttingDown("server is stopping")
        request = parse_request(body)
        if len((yield self.store.pending_rpcs(device_id))) >= self.max_queued:
            self.refused += 1
            raise TooMany(f"{self.max_queued} rpcs already wait for this device; retry once it took some")
        rpc = yield self.store.add_rpc(Rpc(id=new_id(), device_id=device_id, request_id=0, method=request["method"],
                                           params_json=request["params_json"], oneway=oneway,
                                           persistent=request["persistent"],
                                           expiration_time=request["expiration_time"],
                                           created_time=request["created_time"]))
        self.status_changes["QUEUED"] += 1
        self._schedule_expiry(rpc)
        if rpc.persistent:
            self.bus.publish(RpcChanged(device_id, rpc.id, rpc.status))
            return {"rpcId": rpc.id}
        waiting = defer.Deferred()
        self._waiters.setdefault(rpc.id, []).append((waiting, oneway))
        self._track(rpc.id, device_id)
        self.bus.publish(RpcChanged(device_id, rpc.id, rpc.status))
        result = yield waiting
        return result

    def _set_status(self, rpc_id, status, *args, **kwargs):
        """The store's ``set_rpc_status``, counted (for /metrics) when it changed the status."""
        d = self.store.set_rpc_status(rpc_id, status, *args, **kwargs)
        return d.addCallback(self._counted, status)

    def _counted(self, changed, status):
        if changed:
            self.status_changes[status] += 1
        return changed

    def get(self, rpc_id):
        """Deferred Rpc, or NotFound."""
        return self.store.get_rpc(rpc_id).addCallback(_found, rpc_id)

    @defer.inlineCallbacks
    def delete(self, rpc_id):
        """Delete an RPC (NotFound if unknown); a waiting caller gets 404."""
        if not (yield self.store.delete_rpc(rpc_id)):
            raise NotFound(f"rpc {rpc_id} not found")
        self._cancel_timer(rpc_id)
        self._fail_waiters(rpc_id, NotFound(f"rpc {rpc_id} was deleted"))

    def page(self, device_id, page_size, page):
        """Deferred ``(rpcs, total)``, newest first."""
        return self.store.list_rpcs(device_id, page_size, page * page_size)

    # -- devices --------------------------------------------------------------

    def add_channel(self, device_id, channel):
        """A device observes ``/rpc`` through ``channel``; queued RPCs go out now."""
        self._channels.setdefault(device_id, {})[channel] = None
        self.deliver(device_id)

    def remove_channel(self, device_id, channel):
        """That observation ended (O(1))."""
        channels = self._channels.get(device_id)
        if channels is not None:
            channels.pop(channel, None)
            if not channels:
                del self._channels[device_id]

    @defer.inlineCallbacks
    def reply(self, device, request_id, response_json):
        """The device answered RPC ``request_id``; unknown or finished ids are logged only."""
        rpc = yield self.store.rpc_by_request_id(device.id, request_id)
        if rpc is not None and not rpc.oneway:
            if (yield self._set_status(rpc.id, "SUCCESSFUL", response_json, expect=("SENT", "DELIVERED"))):
                self._cancel_timer(rpc.id)
                self.bus.publish(RpcChanged(device.id, rpc.id, "SUCCESSFUL"))
                return
        log.info("reply from device {device} for unknown or finished rpc {id}", device=device.id, id=request_id)

    def deliver(self, device_id):
        """Send the device's next queued RPC if it observes ``/rpc`` here and nothing is in flight
        (if something is, look again once it is done: an RPC queued meanwhile is not forgotten)."""
        if not self._running or device_id not in self._channels:
            return
        if self._asleep(device_id):
            return
        if device_id in self._busy:
            self._again.add(device_id)
            return
        self._busy.add(device_id)
        self._again.discard(device_id)
        self._deliver_next(device_id).addErrback(self._delivery_failed, device_id)

    def _asleep(self, device_id):
        """True (and the device's RPCs wait, QUEUED, for its next uplink) outside its window."""
        power = self.power
        if power is None or power.is_open(device_id):
            return False
        power.hold(device_id)
        return True

    def _idle(self, device_id):
        """Delivery to the device has ended; start again if someone asked meanwhile."""
        self._busy.discard(device_id)
        if device_id in self._again:
            self.deliver(device_id)

    @defer.inlineCallbacks
    def _deliver_next(self, device_id):
        now = now_ms()
        pending = yield self.store.pending_rpcs(device_id)
        for rpc in pending:
            channels = list(self._channels.get(device_id, ()))
            if not channels:
                break
            if rpc.status != "QUEUED":
                continue
            if rpc.expiration_time <= now:  # its timer was on a node that went away, say
                self._expire(rpc)
                continue
            if self._asleep(device_id):  # the window closed meanwhile
                break
            if not (yield self._set_status(rpc.id, "SENT", expect=("QUEUED",))):
                continue
            message = RpcNotice(rpc.request_id, rpc.method, rpc.params_json)  # each form made once for all channels
            delivery = _Delivery(rpc, len(channels), message)
            self.bus.publish(RpcChanged(device_id, rpc.id, "SENT"))
            for channel in channels:  # every observer of /rpc gets it (each registration is notified); the first ACK delivers
                channel.send(message, lambda outcome, channel=channel: self._sent(delivery, channel, outcome))
            return
        self._idle(device_id)

    def _delivery_failed(self, failure, device_id):
        self._idle(device_id)
        log.failure("rpc delivery to device {device} failed", failure, device=device_id)

    def _sent(self, delivery, channel, outcome):
        """One observer's outcome.  The first "ack"/"sent" delivers the RPC and lets the next one
        go; an observation that did not take it ("rst", "timeout", "canceled") has ended, and if
        none took it, it goes back to the queue until it expires (an RST or a lost CON is not a delivery).
        "refused": the RPC cannot be put in that observation's format (its params do not fit the
        profile's RPC request message); if no observer took it, the RPC FAILED with the reason."""
        rpc = delivery.rpc
        delivery.outcomes += 1
        status, response = None, None
        if outcome in ("ack", "sent"):
            if outcome == "ack" and self.power is not None:
                self.power.acked(rpc.device_id)  # an ACK is an uplink (ThingsBoard's rule)
            if not delivery.delivered:
                delivery.delivered = True
                status = "SUCCESSFUL" if rpc.oneway else "DELIVERED"
        else:
            if outcome != "refused":
                self.remove_channel(rpc.device_id, channel)
            if delivery.outcomes == delivery.expected and not delivery.delivered:
                status = "FAILED" if delivery.notice.refusal else "QUEUED"
                response = compact_json({"error": delivery.notice.refusal}) if delivery.notice.refusal else None
        if status is None:
            return
        d = self._set_status(rpc.id, status, response, expect=("SENT",))
        d.addCallback(self._status_changed, rpc, status)
        d.addBoth(self._delivery_done, rpc.device_id)  # the next RPC need not wait for slow observers
        d.addErrback(lambda f: log.failure("rpc status update failed", f))

    def _status_changed(self, changed, rpc, status):
        if changed:
            if status in RPC_FINAL:
                self._cancel_timer(rpc.id)
            self.bus.publish(RpcChanged(rpc.device_id, rpc.id, status))

    def _delivery_done(self, result, device_id):
        self._again.add(device_id)  # the next RPC, if any
        self._idle(device_id)
        return result

    # -- expiry, events, lifecycle ---------------------------------------------

    def _schedule_expiry(self, rpc):
        delay = max(0.0, (rpc.expiration_time - now_ms()) / 1000)
        self._cancel_timer(rpc.id)
        self._timers[rpc.id] = self.clock.callLater(delay, self._expire, rpc)
        self._track(rpc.id, rpc.device_id)

    def _track(self, rpc_id, device_id):
        self._rpc_device[rpc_id] = device_id
        self._device_rpcs.setdefault(device_id, set()).add(rpc_id)

    def _untrack(self, rpc_id):
        """Forget the RPC's device once it has neither a timer nor a waiter here."""
        if rpc_id in self._timers or rpc_id in self._waiters:
            return
        device_id = self._rpc_device.pop(rpc_id, None)
        rpcs = self._device_rpcs.get(device_id)
        if rpcs is not None:
            rpcs.discard(rpc_id)
            if not rpcs:
                del self._device_rpcs[device_id]

    def _cancel_timer(self, rpc_id):
        timer = self._timers.pop(rpc_id, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._untrack(rpc_id)

    @defer.inlineCallbacks
    def _expire(self, rpc):
        self._timers.pop(rpc.id, None)
        self._untrack(rpc.id)
        try:
            if (yield self._set_status(rpc.id, "EXPIRED", expect=("QUEUED", "SENT"))):
                self.bus.publish(RpcChanged(rpc.device_id, rpc.id, "EXPIRED"))
            elif (yield self._set_status(rpc.id, "TIMEOUT", expect=("DELIVERED",))):
                self.bus.publish(RpcChanged(rpc.device_id, rpc.id, "TIMEOUT"))
        except Exception:
            log.failure("could not expire rpc {id}", id=rpc.id)

    def _on_event(self, event):
        if isinstance(event, RpcChanged):
            if event.rpc_id in self._waiters:
                self.get(event.rpc_id).addCallbacks(self._answer_waiters, lambda f: None)
            if event.status in (None, "QUEUED"):
                self.deliver(event.device_id)
        elif isinstance(event, Resync):  # RPCs queued or answered on another node meanwhile
            for rpc_id in list(self._waiters):
                self.get(rpc_id).addCallbacks(self._answer_waiters, lambda f: None)
            for device_id in list(self._channels):
                self.deliver(device_id)
        elif isinstance(event, DeviceGone):
            device_id = event.device_id
            self._channels.pop(device_id, None)
            for rpc_id in list(self._device_rpcs.get(device_id, ())):  # only this device's RPCs
                self._cancel_timer(rpc_id)
                self._fail_waiters(rpc_id, NotFound(f"device {device_id} was deleted"))

    def _answer_waiters(self, rpc):
        waiters = self._waiters.get(rpc.id, [])
        for waiting, oneway in list(waiters):
            if rpc.status in ("EXPIRED", "TIMEOUT", "FAILED"):
                error = (RpcFailed(_failure(rpc)) if rpc.status == "FAILED"
                         else GatewayTimeout(f"rpc {rpc.request_id} {_VERB[rpc.status]} before it expired"))
            elif rpc.status == "SUCCESSFUL" or (oneway and rpc.status == "DELIVERED"):
                error = None
            else:
                continue
            waiters.remove((waiting, oneway))
            if error is None:
                waiting.callback(rpc)
            else:
                waiting.errback(error)
        if not waiters:
            self._waiters.pop(rpc.id, None)
            self._untrack(rpc.id)

    def _fail_waiters(self, rpc_id, error):
        for waiting, _ in self._waiters.pop(rpc_id, []):
            waiting.errback(error)
        self._untrack(rpc_id)

    @defer.inlineCallbacks
    def start(self):
        """Take up the RPCs the store holds: expiry timers, SENT ones back to the queue."""
        self._running = True
        for rpc in (yield self.store.pending_rpcs()):
            if rpc.status == "SENT":
                yield self._set_status(rpc.id, "QUEUED", expect=("SENT",))
            self._schedule_expiry(rpc)

    def stop(self):
        """Stop timers; waiting callers get 503 (their RPCs stay in the store)."""
        self._running = False
        for rpc_id in list(self._timers):
            self._cancel_timer(rpc_id)
        for rpc_id in list(self._waiters):
            self._fail_waiters(rpc_id, ShuttingDown("server is stopping; the rpc stays queued"))

    def stats(self):
        """Counters of this node: RPCs not yet final with an expiry timer here, callers waiting,
        /rpc observations (``queuedRpcs``, from the store, is added by ``counts``)."""
        return {"pendingRpcs": len(self._timers), "waitingCallers": sum(map(len, self._waiters.values())),
                "rpcChannels": sum(map(len, self._channels.values())), "refusedRpcs": self.refused}

    @defer.inlineCallbacks
    def counts(self):
        """``{"QUEUED": n, "SENT": n, "DELIVERED": n}`` over every device, from the store."""
        out = {"QUEUED": 0, "SENT": 0, "DELIVERED": 0}
        for rpc in (yield self.store.pending_rpcs()):
            out[rpc.status] = out.get(rpc.status, 0) + 1
        return out


class RpcNotice:
    """One server-side RPC as its device is told of it: ``request_id``, ``method``, ``params`` (JSON
    values); ``form(key, make)`` is ``make(self)`` made once per key (a format) for every observer.
    ``refusal``: why a format could not carry it, if one could not."""

    __slots__ = ("request_id", "method", "params", "refusal", "_forms")

    def __init__(self, request_id, method, params_json):
        self.request_id, self.method, self.params = request_id, method, json.loads(params_json)
        self.refusal, self._forms = None, {}

    def body(self) -> dict:
        """``{"id","method","params"}``, as JSON devices get it."""
        return {"id": self.request_id, "method": self.method, "params": self.params}

    def form(self, key, make):
        """``make(self)``, made on the first call for ``key``; its exception is raised each time."""
        made = self._forms.get(key)
        if made is None:
            try:
                made = self._forms[key] = (True, make(self))
            except Exception as e:
                made = self._forms[key] = (False, e)
        if not made[0]:
            raise made[1]
        return made[1]


class _Delivery:
    """One RPC sent to every observer of a device, waiting for their outcomes."""

    __slots__ = ("rpc", "expected", "outcomes", "delivered", "notice")

    def __init__(self, rpc, expected, notice):
        self.rpc, self.expected, self.outcomes, self.delivered, self.notice = rpc, expected, 0, False, notice


def _failure(rpc):
    """What a FAILED RPC's caller is told: the reason kept in its response, if any."""
    reason = None
    if rpc.response_json:
        body = json.loads(rpc.response_json)
        reason = body.get("error") if isinstance(body, dict) else None
    return f"rpc {rpc.request_id} failed: {reason or 'the device rejected it'}"


def _found(rpc, rpc_id):
    if rpc is None:
        raise NotFound(f"rpc {rpc_id} not found")
    return rpc


