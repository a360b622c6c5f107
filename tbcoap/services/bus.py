"""Change events from the services to whoever delivers them to devices.

On one node the bus calls its subscribers at once, in the publisher's
call; a store plugin for several nodes may offer a bus that also carries
the events to other nodes (docs/design.md).  Events are small frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

log = Logger()


@dataclass(frozen=True)
class SharedAttributesChanged:
    """Shared attributes were written: ``values`` is ``{key: typed value}``."""

    device_id: str
    values: dict


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
class TokenReplaced:
    """A device's access token was replaced."""

    device_id: str


class LocalBus:
    """Delivers each event to every subscriber, synchronously, on this node."""

    def __init__(self):
        self._subscribers = []

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
