"""Change events from the services to whoever delivers them to devices, and the local bus.

On one node the bus calls its subscribers at once, in the publisher's call; a store plugin for
several nodes offers a bus (``IStore.bus()``) that also carries the events to the other nodes,
in JSON made by ``to_json`` and read by ``from_json``.  Events are small frozen dataclasses.
Part of the public plugin API.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tbcoap.interfaces import IBus
from tbcoap.models import Json, from_kind, kind_of

log = Logger()


@dataclass(frozen=True)
class SharedAttributesChanged:
    """Shared attributes were written: ``values`` is ``{key: typed value}``, ``ts`` their
    lastUpdateTs (0 from a node that did not say)."""

    device_id: str
    values: dict
    ts: int = 0


@dataclass(frozen=True)
class SharedAttributesDeleted:
    """Shared attributes were deleted."""

    device_id: str
    keys: tuple


@dataclass(frozen=True)
class RpcChanged:
    """An RPC was queued or changed status (or a device may have RPCs to deliver)."""

    device_id: str
    rpc_id: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class DeviceGone:
    """A device was deleted."""

    device_id: str


@dataclass(frozen=True)
class DeviceUpdated:
    """A device's name, type, label or additional info changed (caches of it are stale)."""

    device_id: str


@dataclass(frozen=True)
class TokenReplaced:
    """A device's access token was replaced."""

    device_id: str


@dataclass(frozen=True)
class ProfileChanged:
    """A device profile was saved: ``name`` is its name now; ``renamed`` when that changed (its
    devices' ``type`` changed with it)."""

    profile_id: str
    name: str
    renamed: bool = False


@dataclass(frozen=True)
class TelemetryStored:
    """Time series were committed: ``entries`` is a tuple of ``(ts, key, typed value)``.  Published
    only for devices someone watches (``Watching``), so unwatched writes cost the bus nothing."""

    device_id: str
    entries: tuple


@dataclass(frozen=True)
class AttributesStored:
    """CLIENT_SCOPE or SERVER_SCOPE attributes were committed (shared ones are
    ``SharedAttributesChanged``); published only for watched devices, as ``TelemetryStored``."""

    device_id: str
    scope: str
    values: dict
    ts: int


@dataclass(frozen=True)
class AttributesDeleted:
    """CLIENT_SCOPE or SERVER_SCOPE attributes were deleted (watched devices only)."""

    device_id: str
    scope: str
    keys: tuple


@dataclass(frozen=True)
class Watching:
    """A node has live subscriptions of these devices: every node publishes their changes
    (``TelemetryStored``, ``AttributesStored``) for the next ``ttl_ms``; the node says it again
    before that ends, while the subscriptions last."""

    node: str
    device_ids: tuple
    ttl_ms: int


@dataclass(frozen=True)
class WatchQuery:
    """A node may have missed ``Watching`` events (its bus reconnected): every node says again what
    it watches."""

    node: str


@dataclass(frozen=True)
class CustomerGone:
    """A customer was deleted: its API key is refused from now on, its devices are free."""

    customer_id: str


@dataclass(frozen=True)
class Resync:
    """Events from other nodes may have been missed (the bus reconnected): look at the store again."""


EVENTS = {cls.__name__: cls for cls in (SharedAttributesChanged, SharedAttributesDeleted, RpcChanged, DeviceGone,
                                        DeviceUpdated, TokenReplaced, ProfileChanged, CustomerGone, TelemetryStored,
                                        AttributesStored, AttributesDeleted, Watching, WatchQuery, Resync)}


def to_json(event) -> str:
    """An event as JSON text (typed values keep their type)."""
    data = asdict(event)
    if isinstance(event, (SharedAttributesChanged, AttributesStored)):
        data["values"] = {key: [kind_of(value), _plain(value)] for key, value in event.values.items()}
    elif isinstance(event, TelemetryStored):
        data["entries"] = [[ts, key, kind_of(value), _plain(value)] for ts, key, value in event.entries]
    return json.dumps({"event": type(event).__name__, **data}, separators=(",", ":"), ensure_ascii=False)


def from_json(text):
    """The event ``to_json`` made (ValueError for anything else)."""
    data = json.loads(text)
    cls = EVENTS[data.pop("event")]
    if cls in (SharedAttributesChanged, AttributesStored):
        data["values"] = {key: from_kind(kind, value) for key, (kind, value) in data["values"].items()}
    elif cls is TelemetryStored:
        data["entries"] = tuple((ts, key, from_kind(kind, value)) for ts, key, kind, value in data["entries"])
    for name in ("keys", "device_ids"):
        if name in data:
            data[name] = tuple(data[name])
    # a field a node of an older version did not send takes its default
    return cls(**{f.name: data[f.name] if f.name in data or f.default is MISSING else f.default
                  for f in fields(cls)})


def _plain(value):
    return str(value) if isinstance(value, Json) else value


@implementer(IBus)
class LocalBus:
    """Delivers each event to every subscriber, synchronously, on this node."""

    def __init__(self):
        self._subscribers = []

    def start(self):
        """Nothing to connect."""
        return defer.succeed(None)

    def close(self):
        """Nothing to disconnect."""
        return defer.succeed(None)

    def subscribe(self, callback):
        """Call ``callback(event)`` for every event from now on."""
        self._subscribers.append(callback)

    def publish(self, event):
        """Deliver ``event``; a failing subscriber is logged and does not stop the others."""
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.failure("bus subscriber failed on {event}", event=type(event).__name__)
