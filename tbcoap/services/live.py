"""Live subscriptions: the devices someone watches, and what each subscription is sent.

A ``Subscription`` watches one device's time series or attributes (some keys or all).  It is sent
the current values first, then every change as it is stored, from the same bus events that drive
CoAP notifications, on any node of a shared store.  Nothing here knows WebSocket: a subscription
is fed ``deliver({key: [(ts, value)]})`` (a deleted attribute is ``(0, DELETED)``) and told
``end(code, message)`` when it ends from this side (the device was deleted, its owner changed).

Telemetry and client/server attribute writes are published only for devices a node watches: a
node with subscriptions of a device says so (``Watching``) at once and every RENEW_S after, and
every node remembers that for TTL_MS; a write of a device nobody watches costs one dict look-up.
The remembered devices are kept in arrival order of their last renewal, so expired ones are taken
from the front (O(1) each) and at most MAX_WATCHED are kept.  A node that may have missed
``Watching`` events (``Resync``) asks every node to say again (``WatchQuery``).  A device just
announced gets its current values read once more after SETTLE_S, so a change made on another
node before that node heard of the subscription is not lost.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from twisted.internet import defer, task
from twisted.logger import Logger

from tbcoap.errors import StoreUnavailable
from tbcoap.events import (AttributesDeleted, AttributesStored, DeviceGone, DeviceUpdated, Resync,
                           SharedAttributesChanged, SharedAttributesDeleted, TelemetryStored, WatchQuery, Watching)
from tbcoap.models import SCOPES, new_id, now_ms

log = Logger()

TIMESERIES, ATTRIBUTES = "TIMESERIES", "ATTRIBUTES"
DELETED = object()  # the value of a deleted attribute (ThingsBoard sends it as [0, ""])
TTL_MS = 60_000
RENEW_S = 20.0
SETTLE_S = 1.0
MAX_WATCHED = 100_000
ANNOUNCE_CHUNK = 1000
MAX_PENDING = 64  # changes held for a subscription before its first values are out (more: read again)
BAD_REQUEST, UNAUTHORIZED = 2, 3  # ThingsBoard's SubscriptionErrorCode


class Subscription:
    """One device's time series (``kind`` TIMESERIES) or attributes (ATTRIBUTES, ``scope`` one of
    SCOPES or None for all), ``keys`` a frozenset or None for all.  ``may_see(device)`` says whether
    the subscriber may still see the device; ``latest_only``: send no point older than one sent."""

    __slots__ = ("device_id", "kind", "keys", "scope", "deliver", "end", "may_see", "latest_only", "state",
                 "ready", "pending", "missed", "open")

    def __init__(self, device_id, kind, deliver, end, may_see, keys=None, scope=None, latest_only=False):
        self.device_id, self.kind, self.keys, self.scope = device_id, kind, keys, scope
        self.deliver, self.end, self.may_see, self.latest_only = deliver, end, may_see, latest_only
        self.state = {}  # key -> newest ts sent
        self.ready = False  # the first values are out
        self.pending = []
        self.missed = False
        self.open = True

    def wants(self, key):
        return self.keys is None or key in self.keys

    def send(self, data, newer_only=False):
        """Deliver ``{key: [(ts, value)]}`` (only the keys it wants; with ``newer_only`` or
        ``latest_only``, only points newer than those sent), remembering the newest ts per key."""
        out = {}
        for key, points in data.items():
            if not self.wants(key):
                continue
            seen = self.state.get(key)
            if (newer_only or self.latest_only) and seen is not None:
                points = [p for p in points if p[0] > seen or p[1] is DELETED]
            if points:
                out[key] = points
                newest = max(p[0] for p in points)
                if seen is None or newest > seen:
                    self.state[key] = newest
        if out or not self.ready:
            self.deliver(out)


class LiveService:
    """The subscriptions of this node and the devices any node watches."""

    def __init__(self, bus, telemetry, attributes, devices, max_subscriptions=100_000, clock=None):
        self.bus, self.telemetry, self.attributes, self.devices = bus, telemetry, attributes, devices
        self.max_subscriptions = max_subscriptions
        self.clock = clock
        self.node = new_id()
        self._subs = {}  # device_id -> {Subscription: None}, in the order they were opened
        self._count = 0
        self._interest = OrderedDict()  # device_id -> monotonic expiry, oldest renewal first
        self._announce = set()  # devices to announce at the end of this reactor turn
        self._loop = None
        self.counters = {"published": 0, "announced": 0, "expired": 0, "evicted": 0, "refused": 0}
        bus.subscribe(self._on_event)

    # -- what writers ask ----------------------------------------------------------------

    def watched(self, device_id) -> bool:
        """True if some node watches the device now (a dict look-up)."""
        expiry = self._interest.get(device_id)
        return expiry is not None and expiry > time.monotonic()

    def telemetry_stored(self, device_id, entries):
        """Time series of the device were committed: published if someone watches it."""
        if device_id in self._interest and self.watched(device_id):
            self.counters["published"] += 1
            self.bus.publish(TelemetryStored(device_id, tuple(entries)))

    def attributes_stored(self, device_id, scope, values, ts):
        """CLIENT_SCOPE or SERVER_SCOPE attributes were committed: published if someone watches."""
        if device_id in self._interest and self.watched(device_id):
            self.counters["published"] += 1
            self.bus.publish(AttributesStored(device_id, scope, dict(values), ts))

    def attributes_deleted(self, device_id, scope, keys):
        """CLIENT_SCOPE or SERVER_SCOPE attributes were deleted: published if someone watches."""
        if keys and device_id in self._interest and self.watched(device_id):
            self.bus.publish(AttributesDeleted(device_id, scope, tuple(keys)))

    # -- subscriptions -----------------------------------------------------------------------

    def open(self, sub, first=None):
        """Start ``sub``: it is sent ``first()`` (a Deferred of ``{key: [(ts, value)]}``; default: the
        current values) and then every change.  StoreUnavailable when the node holds as many
        subscriptions as it may.  Fires once the first values are out."""
        if self._count >= self.max_subscriptions:
            self.counters["refused"] += 1
            raise StoreUnavailable(f"this node holds {self.max_subscriptions} live subscriptions, as many as it may")
        members = self._subs.get(sub.device_id)
        fresh = not self.watched(sub.device_id)
        if members is None:
            members = self._subs[sub.device_id] = {}
        members[sub] = None
        self._count += 1
        if fresh:
            self._soon(sub.device_id)
        d = defer.maybeDeferred(first or (lambda: self.current(sub)))
        d.addCallback(self._first, sub, fresh)
        return d

    def _first(self, data, sub, fresh):
        if not sub.open:
            return
        sub.send(data)
        sub.ready = True
        pending, sub.pending = sub.pending, []
        for change in pending:
            sub.send(change, newer_only=True)
        if fresh or sub.missed:
            sub.missed = False
            self._later(SETTLE_S, self._catch_up, sub)

    def close(self, sub):
        """Stop ``sub`` (no more deliveries); idempotent."""
        if not sub.open:
            return
        sub.open = False
        members = self._subs.get(sub.device_id)
        if members is not None and members.pop(sub, 0) is None:
            self._count -= 1
            if not members:
                del self._subs[sub.device_id]

    def count(self) -> int:
        return self._count

    @defer.inlineCallbacks
    def current(self, sub):
        """The subscription's current values ``{key: [(ts, value)]}``: latest time series, or the
        attributes of its scope (all three when None)."""
        keys = sorted(sub.keys) if sub.keys is not None else None
        if sub.kind == TIMESERIES:
            found = yield self.telemetry.latest(sub.device_id, keys)
            return {key: [(ts, value)] for key, (ts, value) in found.items()}
        out = {}
        for scope in ([sub.scope] if sub.scope else SCOPES):
            found = yield self.attributes.get(sub.device_id, scope, keys)
            for key, (value, ts) in found.items():
                out[key] = [(ts, value)]
        return out

    def _catch_up(self, sub):
        if not sub.open:
            return
        d = self.current(sub)
        d.addCallback(lambda data: sub.open and sub.send(data, newer_only=True))
        d.addErrback(lambda f: log.warn("live: could not read device {device} again: {e}",
                                        device=sub.device_id, e=f.getErrorMessage()))

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event):
        kind = type(event)
        if kind is TelemetryStored:
            members = self._subs.get(event.device_id)
            if members:
                data = {}
                for ts, key, value in event.entries:
                    data.setdefault(key, []).append((ts, value))
                self._feed(members, TIMESERIES, None, data)
        elif kind in (SharedAttributesChanged, AttributesStored):
            members = self._subs.get(event.device_id)
            if members:
                scope = getattr(event, "scope", "SHARED_SCOPE")
                ts = event.ts or now_ms()
                self._feed(members, ATTRIBUTES, scope, {k: [(ts, v)] for k, v in event.values.items()})
        elif kind in (SharedAttributesDeleted, AttributesDeleted):
            members = self._subs.get(event.device_id)
            if members:
                scope = getattr(event, "scope", "SHARED_SCOPE")
                self._feed(members, ATTRIBUTES, scope, {k: [(0, DELETED)] for k in event.keys})
        elif kind is Watching:
            self._note(event.device_ids, event.ttl_ms)
        elif kind is WatchQuery:
            if event.node != self.node:
                self._announce_all()
        elif kind is DeviceGone:
            for sub in list(self._subs.get(event.device_id, ())):
                self.close(sub)
                sub.end(BAD_REQUEST, "device deleted")
        elif kind is DeviceUpdated:
            if self._subs.get(event.device_id):
                self._recheck(event.device_id)
        elif kind is Resync:
            self.bus.publish(WatchQuery(self.node))
            self._announce_all()
            for members in list(self._subs.values()):
                for sub in list(members):
                    self._catch_up(sub)

    def _feed(self, members, kind, scope, data):
        for sub in list(members):
            if sub.kind != kind or (scope is not None and sub.scope not in (None, scope)):
                continue
            if sub.ready:
                sub.send(data)
            elif len(sub.pending) < MAX_PENDING:
                sub.pending.append(data)
            else:
                sub.missed = True

    @defer.inlineCallbacks
    def _recheck(self, device_id):
        """The device's owner may have changed: end subscriptions whose subscriber may not see it."""
        try:
            device = yield self.devices.get(device_id)
        except Exception:  # gone, or the store is down: DeviceGone or the next change decides
            return
        for sub in list(self._subs.get(device_id, ())):
            if not sub.may_see(device):
                self.close(sub)
                sub.end(UNAUTHORIZED, "Unauthorized")

    # -- interest ----------------------------------------------------------------------------

    def _note(self, device_ids, ttl_ms):
        expiry = time.monotonic() + ttl_ms / 1000
        interest = self._interest
        for device_id in device_ids:
            interest.pop(device_id, None)
            interest[device_id] = expiry
        while len(interest) > MAX_WATCHED:
            interest.popitem(last=False)
            self.counters["evicted"] += 1

    def _soon(self, device_id):
        self._note((device_id,), TTL_MS)  # this node's own writes publish from now on
        if not self._announce:
            self._later(0, self._flush_announce)
        self._announce.add(device_id)

    def _flush_announce(self):
        devices, self._announce = self._announce, set()
        self._publish_watching(devices)

    def _announce_all(self):
        self._publish_watching(list(self._subs))

    def _publish_watching(self, devices):
        devices = list(devices)
        for i in range(0, len(devices), ANNOUNCE_CHUNK):
            self.counters["announced"] += 1
            self.bus.publish(Watching(self.node, tuple(devices[i:i + ANNOUNCE_CHUNK]), TTL_MS))

    def sweep(self):
        """Say again what this node watches; forget what expired (from the front, O(1) each)."""
        self._announce_all()
        now, interest = time.monotonic(), self._interest
        while interest:
            device_id, expiry = next(iter(interest.items()))
            if expiry > now:
                break
            del interest[device_id]
            self.counters["expired"] += 1

    def start(self):
        self._loop = task.LoopingCall(self.sweep)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(RENEW_S, now=False).addErrback(lambda f: log.failure("live sweep loop stopped", f))

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _later(self, seconds, fn, *args):
        from twisted.internet import reactor

        (self.clock or reactor).callLater(seconds, fn, *args)

    def stats(self):
        return {"subscriptions": self._count, "devices": len(self._subs), "watchedDevices": len(self._interest),
                "maxSubscriptions": self.max_subscriptions, **self.counters}
