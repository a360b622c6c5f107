"""Who owns a device: the admin gives it to a customer or frees it (claiming, in claims.py, is
the customer's own way).  Every change is published (``DeviceUpdated``), so caches of the device
and live subscriptions of its former owner are looked at again, on every node."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import StoreUnavailable
from tbcoap.events import DeviceUpdated

TRIES = 3  # compare-and-set attempts against owner changes made at the same time


class OwnerService:
    """Assigns devices to customers and frees them."""

    def __init__(self, store, devices, customers, bus):
        self.store, self.devices, self.customers, self.bus = store, devices, customers, bus

    @defer.inlineCallbacks
    def assign(self, device_id, customer_id):
        """Give the device to the customer (from whoever owned it); the device as it is now.
        NotFound for an unknown device or customer."""
        yield self.customers.get(customer_id)
        device = yield self._set(device_id, customer_id)
        return device

    @defer.inlineCallbacks
    def release(self, device_id):
        """Free the device (``customer_id`` None); the device as it is now.  NotFound if unknown."""
        device = yield self._set(device_id, None)
        return device

    @defer.inlineCallbacks
    def _set(self, device_id, customer_id):
        for _ in range(TRIES):
            device = yield self.devices.get(device_id)
            if device.customer_id == customer_id:
                return device
            if (yield self.store.set_device_customer(device_id, customer_id, device.customer_id)):
                self.devices.forget(device_id)
                self.bus.publish(DeviceUpdated(device_id))
                return (yield self.devices.get(device_id))
        raise StoreUnavailable(f"device {device_id} kept changing owner meanwhile: try again")
