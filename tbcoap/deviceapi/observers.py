"""Devices observing ``/attributes`` and ``/rpc``: turning bus events into CoAP notifications.

Shared-attribute changes go to every observation of the device (only the
changed keys; deletions as ``{"deleted": [..]}``).  ``/rpc`` observations are
channels the RPC service sends through.  A deleted device's observations
end with 4.04, a replaced token's with 4.01 (RFC 7641 §3.2).
"""

from __future__ import annotations


from txthings import coap

from tbcoap.deviceapi.answers import error, json_answer
from tbcoap.models import plain
from tbcoap.services.bus import DeviceGone, SharedAttributesChanged, SharedAttributesDeleted, TokenReplaced

class RpcChannel:
    """An ``/rpc`` observation as the RPC service sees it."""

    __slots__ = ("observation",)

    def __init__(self, observation):
        self.observation = observation

    def send(self, message, on_result):
        """Notify ``{"id","method","params"}``; ``on_result`` gets "ack" (CON acknowledged),
        "sent" (NON), or "rst", "timeout", "canceled"."""
        self.observation.notify(json_answer(message), on_result)


class ObserverRegistry:
    """Which observations each device has on this node."""

    def __init__(self, core):
        self.core = core
        self._attributes = {}  # device_id -> {observation}
        self._rpc = {}         # device_id -> {observation: RpcChannel}
        core.bus.subscribe(self._on_event)

    def observing(self, device_id):
        """How many observations the device has here."""
        return len(self._attributes.get(device_id, ())) + len(self._rpc.get(device_id, ()))

    def add_attributes(self, device, observation):
        """An ``/attributes`` observation was registered."""
        self._attributes.setdefault(device.id, set()).add(observation)
        observation.on_cancel = lambda reason: self._ended(self._attributes, device.id, observation)
        self._update_activity(device.id)

    def add_rpc(self, device, observation):
        """An ``/rpc`` observation was registered; it becomes an RPC channel."""
        channel = RpcChannel(observation)
        self._rpc.setdefault(device.id, {})[observation] = channel
        observation.on_cancel = lambda reason: self._rpc_ended(device.id, observation)
        self._update_activity(device.id)
        self.core.rpc.add_channel(device.id, channel)

    def _rpc_ended(self, device_id, observation):
        channel = self._rpc.get(device_id, {}).get(observation)
        if channel is not None:
            self.core.rpc.remove_channel(device_id, channel)
        self._ended(self._rpc, device_id, observation)

    def _ended(self, table, device_id, observation):
        members = table.get(device_id)
        if members is not None and observation in members:
            if isinstance(members, dict):
                del members[observation]
            else:
                members.discard(observation)
            if not members:
                del table[device_id]
        self._update_activity(device_id)

    def _update_activity(self, device_id):
        self.core.activity.set_observing(device_id, self.observing(device_id))

    def _on_event(self, event):
        if isinstance(event, SharedAttributesChanged):
            body = {key: plain(value) for key, value in event.values.items()}
            for observation in list(self._attributes.get(event.device_id, ())):
                observation.notify(json_answer(body))
        elif isinstance(event, SharedAttributesDeleted):
            for observation in list(self._attributes.get(event.device_id, ())):
                observation.notify(json_answer({"deleted": list(event.keys)}))
        elif isinstance(event, (DeviceGone, TokenReplaced)):
            code, text = ((coap.NOT_FOUND, "device deleted") if isinstance(event, DeviceGone)
                          else (coap.UNAUTHORIZED, "access token replaced"))
            for observation in self._detach(event.device_id):
                observation.notify(error(code, text))  # the last one; it ends the relation

    def _detach(self, device_id):
        """Take every observation of the device out of service now (no more changes or RPCs go
        to them, also while their final notification waits for its ACK); returns them."""
        attributes = self._attributes.pop(device_id, set())
        rpc = self._rpc.pop(device_id, {})
        for channel in rpc.values():
            self.core.rpc.remove_channel(device_id, channel)
        self._update_activity(device_id)
        return list(attributes) + list(rpc)

    def stats(self):
        """Open observations on this node."""
        return {"attributeObservations": sum(map(len, self._attributes.values())),
                "rpcObservations": sum(map(len, self._rpc.values()))}
