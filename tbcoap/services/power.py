"""Sleepy devices: when downlinks may go to a device, and waking it up with what was held.

A device's power mode (its own ``deviceData.transportConfiguration``, else its profile's
``clientSettings``) gives a window after each uplink: PSM ``psmActivityTimer``, E_DRX
``pagingTransmissionWindow``; DRX or no mode: any time.  An uplink is a request of the device
(``ActivityTracker.touch``) or its ACK of a notification (``acked``).  Outside the window the
attribute observations merge their changes and the RPC service leaves RPCs QUEUED in the store;
the device is put in ``waiting``, and its next request here calls ``wake``, which lets every
listener (observers, RPC service) send what it holds.  The window is judged by the node that
holds the device's observations, where its requests arrive too (a peer stays with one node).

Only devices with observations here are known (``observe`` / ``unobserved``), so what this keeps
is bounded by the observations; each call is O(1).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from tbcoap.events import DeviceGone, DeviceUpdated, ProfileChanged
from tbcoap.models import now_ms
from tbcoap.payloads.power import AWAKE

log = Logger()


class PowerService:
    """Windows of the sleepy devices observing on this node, and their held downlinks."""

    def __init__(self, store, activity, payloads, bus):
        self.store = store
        self.activity = activity
        self.payloads = payloads
        self._settings = {}  # device_id -> PowerSettings of sleepy devices observing here
        self._types = {}  # device_id -> its profile name, for every device observing here
        self._acked = {}  # device_id -> ms of its last ACK of a notification
        self.waiting = activity.waiting  # devices with downlinks held (the tracker wakes them)
        self._listeners = []
        self.counts = {"held": 0, "woken": 0}
        activity.on_wake = self.wake
        activity.cycle_of = self.cycle_of
        bus.subscribe(self._on_event)

    def listen(self, callback):
        """Call ``callback(device_id)`` when a device with downlinks held wakes."""
        self._listeners.append(callback)

    # -- settings ----------------------------------------------------------------

    def settings_of(self, device):
        """Deferred PowerSettings of a Device (its own, else its profile's)."""
        payloads = self.payloads.cached(device.type)
        if payloads is not None:
            return defer.succeed(payloads.settings.power_of(device.transport_configuration))
        d = self.payloads.lookup(device.type)
        return d.addCallback(lambda p: p.settings.power_of(device.transport_configuration))

    @defer.inlineCallbacks
    def cycle_of(self, device_id):
        """Deferred ``cycle_ms`` of a device (0 for an unknown one)."""
        device = yield self.store.get_device(device_id)
        if device is None:
            return 0
        return (yield self.settings_of(device)).cycle_ms

    def observe(self, device):
        """The device registered an observation here: learn whether it sleeps."""
        self._types[device.id] = device.type
        d = self.settings_of(device)
        d.addCallback(self._learned, device)
        d.addErrback(lambda f: log.failure("power settings of device {device}", f, device=device.id))
        return d

    def _learned(self, settings, device):
        if device.id not in self._types:
            return settings  # its observations ended meanwhile
        if settings.window_ms is None:
            self._settings.pop(device.id, None)
            if device.id in self.waiting:
                self.wake(device.id)  # no longer asleep: what was held goes now
        else:
            self._settings[device.id] = settings
        return settings

    def unobserved(self, device_id):
        """The device has no observation here any more."""
        for holder in (self._settings, self._types, self._acked):
            holder.pop(device_id, None)
        self.waiting.discard(device_id)

    def settings(self, device_id):
        """The PowerSettings known for a device observing here (AWAKE when it does not sleep)."""
        return self._settings.get(device_id, AWAKE)

    def sleepy(self, device_id) -> bool:
        """True when the device observing here has a power-saving window."""
        return device_id in self._settings

    # -- windows -----------------------------------------------------------------

    def is_open(self, device_id, now=None) -> bool:
        """May a downlink go to the device now?"""
        settings = self._settings.get(device_id)
        if settings is None:
            return True
        last = max(self.activity.heard(device_id), self._acked.get(device_id, 0))
        return (now or now_ms()) - last < settings.window_ms

    def hold(self, device_id):
        """A downlink waits for the device's next uplink."""
        if device_id not in self.waiting:
            self.counts["held"] += 1
            self.waiting.add(device_id)

    def acked(self, device_id):
        """The device acknowledged a notification: an uplink, as in ThingsBoard."""
        if device_id in self._settings:
            self._acked[device_id] = now_ms()

    def wake(self, device_id):
        """The device was heard and has downlinks held: they go now."""
        self.waiting.discard(device_id)
        self.counts["woken"] += 1
        for callback in self._listeners:
            try:
                callback(device_id)
            except Exception:
                log.failure("waking device {device}", device=device_id)

    def _on_event(self, event):
        if isinstance(event, DeviceGone):
            self.unobserved(event.device_id)
        elif isinstance(event, DeviceUpdated):
            if event.device_id in self._types:
                self._refresh(event.device_id)
        elif isinstance(event, ProfileChanged):  # (devices observing here only)
            for device_id, name in list(self._types.items()):
                if event.renamed or name == event.name:
                    self._refresh(device_id)

    def _refresh(self, device_id):
        """Learn again the settings of a device observing here (its own or its profile's changed)."""
        d = self.store.get_device(device_id)
        d.addCallback(lambda device: self.observe(device) if device is not None and device.id in self._types
                      else None)
        d.addErrback(lambda f: log.failure("power settings of device {device}", f, device=device_id))

    def stats(self):
        """Sleepy devices observing here, those with downlinks held, holds and wake-ups so far."""
        return {"sleepyDevices": len(self._settings), "devicesWaiting": len(self.waiting), **self.counts}
