"""Devices observing ``/attributes`` and ``/rpc``: turning bus events into CoAP notifications.

A device keeps at most ``max_per_device`` relations (both kinds together); a registration
beyond that ends its oldest.  Shared-attribute changes go to every ``/attributes`` relation of
the device; changes that arrive while a relation is busy (a CON in flight) merge, latest value
per key and deletions included, and go out as one notification when it is free.  ``/rpc``
relations are channels the RPC service sends through, in order.  A deleted device's relations
end with 4.04, a replaced token's with 4.01 (RFC 7641 §3.2).  Every change here costs time in
proportion to the relations of the device concerned, never a scan of all of them.
"""

from __future__ import annotations

from collections import Counter

from txthings import coap

from tbcoap.deviceapi.answers import error
from tbcoap.errors import BadRequest
from tbcoap.models import now_ms
from tbcoap.events import DeviceGone, Resync, SharedAttributesChanged, SharedAttributesDeleted, TokenReplaced

DELETED = object()  # a merged change that deletes its key
CONTENT = coap.CONTENT


class RpcChannel:
    """An ``/rpc`` observation as the RPC service sees it, in the format it was registered with."""

    __slots__ = ("observation", "codec")
    kind = "rpcObservations"

    def __init__(self, observation, codec):
        self.observation, self.codec = observation, codec

    def send(self, notice, on_result):
        """Notify the RPC of ``notice`` (an RpcNotice: encoded once per format for every channel);
        ``on_result`` gets "ack" (CON acknowledged), "sent" (NON), or "rst", "timeout", "canceled";
        "refused" when the RPC does not fit this observation's format (``notice.refusal`` says why)."""
        try:
            payload = self.codec.rpc_request(notice)
        except BadRequest as e:
            notice.refusal = str(e)
            on_result("refused")
            return
        self.observation.notify_raw(CONTENT, payload, self.codec.content_format, on_result)


class AttributeWatch:
    """An ``/attributes`` observation with the changes merged while it was busy, or while its
    device sleeps (outside its power-saving window), notified in the format it was registered with.

    What is held for a sleeping device is bounded (``registry.max_held_bytes``, counted as the
    changes arrive): beyond it the held changes are dropped and the device gets its whole shared
    set at its next uplink instead (``whole``)."""

    __slots__ = ("observation", "codec", "pending", "registry", "device_id", "held_bytes", "whole")
    kind = "attributeObservations"

    def __init__(self, observation, codec, registry=None, device_id=None):
        self.observation, self.codec = observation, codec
        self.registry, self.device_id = registry, device_id
        self.pending = {}  # key -> (typed value, ts), or DELETED
        self.held_bytes, self.whole = 0, False
        observation.on_idle = self.flush

    def merge(self, changes):
        """Take ``{key: (value, ts) or DELETED}`` and send it now if the relation is free."""
        self.pending.update(changes)
        self.flush(changes)

    def flush(self, changes=None):
        """Send what is pending, if the relation is free and the device awake: the changed keys,
        then the deletions (JSON: two notifications, one for a sleeping device; Protobuf: one
        message with both)."""
        observation = self.observation
        if not (self.pending or self.whole) or not observation.idle:
            return
        registry = self.registry
        power = registry.core.power if registry is not None else None
        sleepy = power is not None and power.sleepy(self.device_id)
        if sleepy and not power.is_open(self.device_id):
            power.hold(self.device_id)
            if changes:
                self._count(changes, registry.max_held_bytes)
            return
        if self.whole:
            self.whole, self.pending, self.held_bytes = False, {}, 0
            registry.send_whole(self)
            return
        pending, self.pending, self.held_bytes = self.pending, {}, 0
        changed = {key: value for key, value in pending.items() if value is not DELETED}
        deleted = [key for key, value in pending.items() if value is DELETED]
        codec = self.codec
        on_result = registry.on_ack(self.device_id) if sleepy else None
        for payload in codec.changes(changed, deleted, combined=sleepy):
            observation.notify_raw(CONTENT, payload, codec.content_format, on_result)

    def _count(self, changes, limit):
        self.held_bytes += sum(len(key) + (8 if value is DELETED else 16 + len(str(value[0])))
                               for key, value in changes.items())
        if self.held_bytes > limit:
            self.pending, self.held_bytes, self.whole = {}, 0, True


class ObserverRegistry:
    """Which observations each device has on this node, in the order they were registered."""

    def __init__(self, core, max_per_device=16, max_held_bytes=65536):
        self.core = core
        self.max_per_device = max_per_device
        self.max_held_bytes = max_held_bytes
        self._acks = {}  # device_id -> its on_result callback: an ACK is an uplink of a sleeping device
        self._devices = {}  # device_id -> {observation: AttributeWatch | RpcChannel}
        self._counts = Counter()
        self._on_relation_end = self._relation_ended  # one bound method for every relation
        core.bus.subscribe(self._on_event)
        core.power.listen(self._wake)

    def on_ack(self, device_id):
        """The ``on_result`` of a sleeping device's notifications: its ACK opens its window again."""
        callback = self._acks.get(device_id)
        if callback is None:
            power = self.core.power
            callback = self._acks[device_id] = lambda outcome: power.acked(device_id) if outcome == "ack" else None
        return callback

    def _wake(self, device_id):
        """A sleeping device was heard: what its attribute observations hold goes now."""
        for member in list(self._devices.get(device_id, {}).values()):
            if isinstance(member, AttributeWatch):
                member.flush()

    def send_whole(self, watch):
        """Send a watch its device's whole shared set in one notification (what was held for it
        outgrew the bound)."""
        d = self.core.attributes.shared_values(watch.device_id)
        now = now_ms()
        d.addCallback(lambda values: watch.merge({key: (value, now) for key, value in values.items()}))
        d.addErrback(lambda f: None)

    def observing(self, device_id):
        """How many observations the device has here."""
        return len(self._devices.get(device_id, ()))

    def add_attributes(self, device, observation, codec):
        """An ``/attributes`` observation was registered (``codec``: its format, kept for its life)."""
        self.core.power.observe(device)
        self._add(device.id, observation, AttributeWatch(observation, codec, self, device.id))

    def add_rpc(self, device, observation, codec):
        """An ``/rpc`` observation was registered; it becomes an RPC channel."""
        channel = RpcChannel(observation, codec)
        self.core.power.observe(device)
        self._add(device.id, observation, channel)
        self.core.rpc.add_channel(device.id, channel)

    def _add(self, device_id, observation, member):
        members = self._devices.setdefault(device_id, {})
        while len(members) >= self.max_per_device:  # the device's oldest relation makes room
            oldest = next(iter(members))
            self._ended(device_id, oldest)
            self._counts["replacedObservations"] += 1
            oldest.cancel("replaced")
        members[observation] = member
        self._counts[member.kind] += 1
        observation.tag = device_id
        observation.on_cancel = self._on_relation_end
        self._update_activity(device_id)

    def _relation_ended(self, observation, reason):
        self._ended(observation.tag, observation)

    def _ended(self, device_id, observation):
        members = self._devices.get(device_id)
        member = members.pop(observation, None) if members is not None else None
        if member is None:
            return
        if not members:
            del self._devices[device_id]
            self._unobserved(device_id)
        self._counts[member.kind] -= 1
        if isinstance(member, RpcChannel):
            self.core.rpc.remove_channel(device_id, member)
        self._update_activity(device_id)

    def _unobserved(self, device_id):
        self._acks.pop(device_id, None)
        self.core.power.unobserved(device_id)

    def _update_activity(self, device_id):
        self.core.activity.set_observing(device_id, self.observing(device_id))

    def _on_event(self, event):
        if isinstance(event, (SharedAttributesChanged, SharedAttributesDeleted)):
            members = self._devices.get(event.device_id)
            if not members:
                return
            if isinstance(event, SharedAttributesChanged):
                now = now_ms()
                changes = {key: (value, now) for key, value in event.values.items()}
            else:
                changes = dict.fromkeys(event.keys, DELETED)
            for member in list(members.values()):
                if isinstance(member, AttributeWatch):
                    member.merge(changes)
        elif isinstance(event, Resync):  # shared changes may have been missed: send the whole set
            for device_id, members in list(self._devices.items()):
                if any(isinstance(m, AttributeWatch) for m in members.values()):
                    d = self.core.attributes.shared_values(device_id)
                    d.addCallbacks(self._resend, lambda f: None, callbackArgs=(device_id,))
        elif isinstance(event, (DeviceGone, TokenReplaced)):
            code, text = ((coap.NOT_FOUND, "device deleted") if isinstance(event, DeviceGone)
                          else (coap.UNAUTHORIZED, "access token replaced"))
            for observation in self._detach(event.device_id):
                observation.on_idle = None
                observation.notify(error(code, text))  # the last one; it ends the relation

    def _resend(self, values, device_id):
        now = now_ms()
        values = {key: (value, now) for key, value in values.items()}
        for member in list(self._devices.get(device_id, {}).values()):
            if isinstance(member, AttributeWatch):
                member.merge(values)

    def _detach(self, device_id):
        """Take every observation of the device out of service now (no more changes or RPCs go
        to them, also while their final notification waits for its ACK); returns them."""
        members = self._devices.pop(device_id, {})
        self._unobserved(device_id)
        for observation, member in members.items():
            self._counts[member.kind] -= 1
            if isinstance(member, RpcChannel):
                self.core.rpc.remove_channel(device_id, member)
        self._update_activity(device_id)
        return list(members)

    def stats(self):
        """Open observations on this node, and how many were ended to make room on their device."""
        return {"attributeObservations": self._counts["attributeObservations"],
                "rpcObservations": self._counts["rpcObservations"],
                "replacedObservations": self._counts["replacedObservations"],
                "maxPerDevice": self.max_per_device}
