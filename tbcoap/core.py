"""The services of one tbcoap node, wired to one store, one bus and one plugin manager.

The device API, REST and tests all reach the domain through a Core.
"""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.payloads import tbmessages
from tbcoap.services.activity import DEFAULT_INACTIVITY_MS, ActivityTracker
from tbcoap.services.attributes import AttributeService
from tbcoap.events import DeviceGone, LocalBus
from tbcoap.services.claims import DEFAULT_DURATION_MS, ClaimService
from tbcoap.services.customers import CustomerService
from tbcoap.services.devices import DeviceService
from tbcoap.services.keycap import DEFAULT_CACHE_BYTES, KeyCap
from tbcoap.services.live import LiveService
from tbcoap.services.ota import OtaService
from tbcoap.services.owners import OwnerService
from tbcoap.services.payloads import PayloadService
from tbcoap.services.power import PowerService
from tbcoap.services.profiles import ProfileService
from tbcoap.services.provisioning import ProvisionService
from tbcoap.services.retention import RetentionService
from tbcoap.services.rpc import RpcService
from tbcoap.services.rules import RuleService
from tbcoap.services.telemetry import TelemetryService
from tbcoap.services.values import Limits


class Core:
    """Holds the domain services; no CoAP or HTTP in here."""

    def __init__(self, store, plugins, rules=(), rule_timeout=10.0, limits: Limits = Limits(), bus=None,
                 claim_duration_ms=DEFAULT_DURATION_MS, ts_ttl_ms=0, max_subscriptions=100_000,
                 max_device_keys=(1000, 1000), device_keys_cache=DEFAULT_CACHE_BYTES,
                 inactivity_timeout_ms=DEFAULT_INACTIVITY_MS, max_queued_rpcs=100):
        self.ready = False  # True while the store is open
        self.store = store
        self.plugins = plugins
        self.limits = limits
        self.bus = bus or LocalBus()
        self.rules = RuleService(plugins, rules, rule_timeout)
        self.activity = ActivityTracker(store, inactivity_timeout_ms)
        self.devices = DeviceService(store, plugins, self.bus)
        self.retention = RetentionService(store, ts_ttl_ms)
        self.keycap = KeyCap(store, *max_device_keys, max_bytes=device_keys_cache)
        self.telemetry = TelemetryService(store, self.retention, self.rules, limits, self.keycap)
        self.attributes = AttributeService(store, self.activity, self.bus, self.rules, limits, self.keycap)
        self.rpc = RpcService(store, self.bus, max_queued=max_queued_rpcs)
        self.customers = CustomerService(store, self.bus)
        self.owners = OwnerService(store, self.devices, self.customers, self.bus)
        self.claims = ClaimService(store, self.devices, claim_duration_ms)
        self.payloads = PayloadService(store, self.bus)
        self.profiles = ProfileService(store, self.payloads, self.bus)
        self.power = PowerService(store, self.activity, self.payloads, self.bus)
        self.attributes.power = self.rpc.power = self.power
        self.power.listen(self.rpc.deliver)
        self.bus.subscribe(self._forget_gone)
        self.provisioning = ProvisionService(store, self.devices)
        self.live = LiveService(self.bus, self.telemetry, self.attributes, self.devices, max_subscriptions)
        self.ota = OtaService(store, self.attributes, self.bus)
        self.provisioning.created = self.ota.refresh_device  # a provisioned device learns of its profile's package
        self.telemetry.live = self.attributes.live = self.activity.live = self.live

    @defer.inlineCallbacks
    def start(self):
        """Start periodic work and take up the RPCs the store holds."""
        tbmessages.messages()  # ThingsBoard's device-facing messages, compiled once per process
        self.activity.start()
        yield self.rpc.start()
        self.retention.start()
        self.live.start()
        self.ready = True

    def stop(self):
        """Deferred: stop periodic work, answer waiting RPC callers 503, write what is pending."""
        self.ready = False
        self.rpc.stop()
        self.live.stop()
        return defer.gatherResults([self.retention.stop(), self.activity.stop()])

    def _forget_gone(self, event):
        if isinstance(event, DeviceGone):  # deleted here or on another node
            self.activity.forget(event.device_id)

    @defer.inlineCallbacks
    def delete_device(self, device_id):
        """Delete a device with its data; NotFound if unknown."""
        yield self.devices.delete(device_id)
        self.activity.forget(device_id)
        self.keycap.forget(device_id)

    def stats(self):
        """Domain and store counters as a plain dict."""
        return {"store": self.store.stats(), "cachedTokens": self.devices.cached_count(), "rpc": self.rpc.stats(),
                "retention": self.retention.stats(), "history": self.telemetry.history_gate.stats(),
                "payloads": self.payloads.stats(), "live": self.live.stats(), "power": self.power.stats(),
                "activeDevices": self.activity.tracked(), "deviceKeys": self.keycap.stats()}
