"""The services of one tbcoap node, wired to one store and one plugin manager.

The device API, REST and tests all reach the domain through a Core.
"""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.services.activity import ActivityTracker
from tbcoap.services.attributes import AttributeService
from tbcoap.services.devices import DeviceService
from tbcoap.services.telemetry import TelemetryService
from tbcoap.services.values import Limits


class Core:
    """Holds the domain services; no CoAP or HTTP in here."""

    def __init__(self, store, plugins, limits: Limits = Limits()):
        self.ready = False  # True while the store is open
        self.store = store
        self.plugins = plugins
        self.limits = limits
        self.activity = ActivityTracker(store)
        self.devices = DeviceService(store, plugins)
        self.telemetry = TelemetryService(store, limits)
        self.attributes = AttributeService(store, self.activity, limits)

    def start(self):
        """Start periodic work (activity flushing)."""
        self.activity.start()

    def stop(self):
        """Deferred: stop periodic work and write what is pending (before the store closes)."""
        return self.activity.stop()

    @defer.inlineCallbacks
    def delete_device(self, device_id):
        """Delete a device with its data; NotFound if unknown."""
        yield self.devices.delete(device_id)
        self.activity.forget(device_id)

    def stats(self):
        """Domain and store counters as a plain dict."""
        return {"store": self.store.stats(), "cachedTokens": self.devices.cached_count()}
