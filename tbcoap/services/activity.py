"""Device activity: the SERVER_SCOPE attributes ``lastActivityTime`` and ``active``.

Every authenticated device request touches the device in memory (a dict
write, nothing else on the hot path); a periodic flush writes the changed
values to the store, and readers merge the fresh in-memory state.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger

from tbcoap.models import now_ms

INACTIVITY_MS = 10 * 60 * 1000
log = Logger()


class ActivityTracker:
    """Remembers when each device was last heard from and persists it in batches."""

    def __init__(self, store, flush_interval=5.0, clock=None):
        self.store = store
        self.flush_interval = flush_interval
        self.clock = clock
        self._last = {}
        self._dirty = set()
        self._active = set()
        self._observing = {}
        self._loop = None
        self.live = None  # the LiveService: told of the values each flush writes

    def touch(self, device_id):
        """The device was heard from now."""
        self._last[device_id] = now_ms()
        self._dirty.add(device_id)

    def set_observing(self, device_id, count):
        """How many open observations the device has (observe keeps it active)."""
        if count:
            self._observing[device_id] = count
        else:
            self._observing.pop(device_id, None)
        self._dirty.add(device_id)

    def forget(self, device_id):
        """The device is gone."""
        for holder in (self._last, self._observing):
            holder.pop(device_id, None)
        self._dirty.discard(device_id)
        self._active.discard(device_id)

    def current(self, device_id, now=None):
        """``{"lastActivityTime": ms, "active": bool}`` known in memory, or {}."""
        last = self._last.get(device_id)
        if last is None and device_id not in self._observing:
            return {}
        now = now or now_ms()
        active = device_id in self._observing or (last is not None and now - last < INACTIVITY_MS)
        out = {"active": active}
        if last is not None:
            out["lastActivityTime"] = last
        return out

    def start(self):
        """Flush periodically from now on."""
        self._loop = task.LoopingCall(self.flush)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(self.flush_interval, now=False).addErrback(
            lambda f: log.failure("activity flush loop stopped", f))

    @defer.inlineCallbacks
    def stop(self):
        """Stop the loop and write what is pending."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        yield self.flush()

    @defer.inlineCallbacks
    def flush(self):
        """Write changed activity values (and devices that just went inactive)."""
        now = now_ms()
        for device_id in list(self._active):
            if not self.current(device_id, now).get("active"):
                self._dirty.add(device_id)
        dirty, self._dirty = self._dirty, set()
        writes = []
        for device_id in dirty:
            values = self.current(device_id, now)
            if not values:
                continue
            (self._active.add if values["active"] else self._active.discard)(device_id)
            d = self.store.save_attributes(device_id, "SERVER_SCOPE", values, now)
            if self.live is not None:
                d.addCallback(lambda _, device_id=device_id, values=values:
                              self.live.attributes_stored(device_id, "SERVER_SCOPE", values, now))
            d.addErrback(lambda f, device_id=device_id: log.failure(
                "could not save activity of device {device}", f, device=device_id))
            writes.append(d)
        yield defer.gatherResults(writes)
