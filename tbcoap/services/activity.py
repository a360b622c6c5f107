"""Device activity, as ThingsBoard keeps it in SERVER_SCOPE attributes: ``active``,
``lastActivityTime``, ``lastConnectTime``, ``lastDisconnectTime``, ``inactivityAlarmTime``.

Any request authenticated as a device is activity; an open observation is not.  A device turns
inactive ``inactivityTimeout`` ms (its SERVER_SCOPE attribute, else the node's setting) after its
last request, plus its cycle when it sleeps (PSM or E_DRX: ``PowerSettings.cycle_ms``).

Costs: a request pays one dict write (``touch``) and one set look-up (devices with downlinks held
for them wake).  A loop every ``flush_interval`` takes the devices heard since its last turn
(the dict is swapped, not scanned), writes their ``lastActivityTime`` (one write per device per
turn, however many requests), and looks up once the timeout and power settings of a device that
was not active on this node.  Expiry is a heap keyed by deadline: a turn pops only the entries
that are due; an entry whose device was heard meanwhile goes back with its new deadline (one heap
operation per device per timeout).  Before writing ``active`` false the store's
``lastActivityTime`` is read, so a device heard by another node meanwhile stays active; readers
judge ``active`` from the stored times (``judge``), so every node of a shared store gives the same
answer, and the stored values are at most one turn and one write behind.
"""

from __future__ import annotations

import heapq

from twisted.internet import defer, task
from twisted.logger import Logger

from tbcoap.models import now_ms

DEFAULT_INACTIVITY_MS = 10 * 60 * 1000
FLUSH_INTERVAL = 2.0  # seconds between turns: the stored values are at most this and a write behind (3 s)
INACTIVITY_KEYS = ("active", "lastActivityTime", "inactivityTimeout")
log = Logger()


def timeout_of(stored, default_ms):
    """A device's inactivity timeout (ms): its ``inactivityTimeout`` attribute when it is a positive
    whole number, else ``default_ms``."""
    value = stored.get("inactivityTimeout")
    value = value[0] if isinstance(value, tuple) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return default_ms
    return int(value)


class ActivityTracker:
    """Activity of the devices heard on this node, written to the store in batches."""

    def __init__(self, store, timeout_ms=DEFAULT_INACTIVITY_MS, flush_interval=FLUSH_INTERVAL, clock=None):
        self.store = store
        self.timeout_ms = timeout_ms
        self.flush_interval = flush_interval
        self.clock = clock
        self._recent = {}  # device_id -> ms: heard since the last turn (the request path's one write)
        self._last = {}  # device_id -> ms of the last request, for devices active on this node
        self._limits = {}  # device_id -> its timeout plus cycle (ms), for those devices
        self._heap = []  # (deadline ms, device_id): at most one entry per device in _last
        self._pending = {}  # device_id -> {attribute: value} still to write (connects, disconnects)
        self._observing = {}  # device_id -> observations open here (connect and disconnect times)
        self._loop = None
        self._turn = None  # the Deferred of the turn under way
        self.waiting = set()  # devices with downlinks held for them (the PowerService's set)
        self.on_wake = None  # called with a device id when a device in ``waiting`` is heard
        self.cycle_of = None  # Deferred PowerSettings.cycle_ms of a device id (set by Core)
        self.live = None  # the LiveService: told of the values each turn writes
        self.transitions = 0  # devices that turned active or inactive here (for tests and stats)

    def touch(self, device_id):
        """The device made a request now."""
        self._recent[device_id] = now_ms()
        if device_id in self.waiting:
            self.on_wake(device_id)

    def heard(self, device_id):
        """When this node last heard the device (ms), or 0."""
        return self._recent.get(device_id) or self._last.get(device_id, 0)

    def set_observing(self, device_id, count):
        """How many observations the device has open here: the first is a connection, the end of
        the last a disconnection (neither is activity)."""
        before = self._observing.get(device_id, 0)
        if count:
            self._observing[device_id] = count
        else:
            self._observing.pop(device_id, None)
        if not before and count:
            self._pending.setdefault(device_id, {})["lastConnectTime"] = now_ms()
        elif before and not count:
            self._pending.setdefault(device_id, {})["lastDisconnectTime"] = now_ms()

    def forget(self, device_id):
        """The device is gone (its heap entry is dropped when it comes due)."""
        for holder in (self._recent, self._last, self._limits, self._pending, self._observing):
            holder.pop(device_id, None)

    def current(self, device_id):
        """``{"lastActivityTime": ms}`` when this node heard the device, else {}."""
        last = self.heard(device_id)
        return {"lastActivityTime": last} if last else {}

    def judge(self, device_id, stored, cycle_ms, now=None):
        """``active`` of a device whose SERVER_SCOPE attributes ``stored`` (``{key: (value, ts)}``)
        were read, merged with what this node heard: heard within its timeout plus its cycle."""
        last = max(self.heard(device_id), _value(stored, "lastActivityTime"))
        return bool(last) and (now or now_ms()) < last + timeout_of(stored, self.timeout_ms) + cycle_ms

    def tracked(self):
        """How many devices are active on this node."""
        return len(self._last)

    # -- the loop ---------------------------------------------------------------

    def start(self):
        """Take a turn every ``flush_interval`` from now on."""
        self._loop = task.LoopingCall(self.flush)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(self.flush_interval, now=False).addErrback(
            lambda f: log.failure("activity loop stopped", f))

    @defer.inlineCallbacks
    def stop(self):
        """Stop the loop and write what is pending."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._turn is not None:
            yield self._turn
        yield self.flush()

    def flush(self):
        """One turn: write the activity heard, connections and disconnections, and the devices whose
        time ran out (a Deferred fired when written)."""
        self._turn = self._flush()
        return self._turn

    @defer.inlineCallbacks
    def _flush(self):
        now = now_ms()
        recent, self._recent = self._recent, {}
        writes = {}
        woke = []
        for device_id, ts in recent.items():
            if device_id in self._last:
                self._last[device_id] = ts
                writes[device_id] = {"lastActivityTime": ts}
            else:
                woke.append((device_id, ts))
        for device_id, ts in woke:
            values = yield self._woke(device_id, ts)
            if values is not None:
                writes[device_id] = values
        for device_id in (yield self._expired(now)):
            writes.setdefault(device_id, {}).update(
                {"active": False, "inactivityAlarmTime": now, "lastDisconnectTime": now})
        pending, self._pending = self._pending, {}
        for device_id, values in pending.items():
            writes.setdefault(device_id, {}).update(values)
        yield defer.gatherResults([self._write(device_id, values, now) for device_id, values in writes.items()])

    @defer.inlineCallbacks
    def _woke(self, device_id, ts):
        """A device not active on this node was heard: learn its timeout and cycle (once), track
        it; the values to write (``active``, and ``lastConnectTime`` when it was inactive)."""
        try:
            stored = yield self.store.get_attributes(device_id, "SERVER_SCOPE", list(INACTIVITY_KEYS))
            cycle = (yield self.cycle_of(device_id)) if self.cycle_of is not None else 0
        except Exception:
            log.failure("could not read the activity settings of device {device}", device=device_id)
            self._recent.setdefault(device_id, ts)  # try again next turn
            return None
        limit = timeout_of(stored, self.timeout_ms) + cycle
        was_active = _value(stored, "active") is True and ts < _value(stored, "lastActivityTime") + limit
        self._last[device_id] = max(ts, self._recent.get(device_id, 0))
        self._limits[device_id] = limit
        heapq.heappush(self._heap, (ts + limit, device_id))
        values = {"active": True, "lastActivityTime": ts}
        if not was_active:
            self.transitions += 1
            values["lastConnectTime"] = ts
        return values

    @defer.inlineCallbacks
    def _expired(self, now):
        """The devices whose deadline passed and that no node heard since: untracked here."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            _, device_id = heapq.heappop(heap)
            last = self._last.get(device_id)
            if last is None:
                continue  # forgotten
            last = max(last, self._recent.get(device_id, 0))
            limit = self._limits[device_id]
            if last + limit > now:
                heapq.heappush(heap, (last + limit, device_id))
                continue
            del self._last[device_id]
            del self._limits[device_id]
            try:
                stored = yield self.store.get_attributes(device_id, "SERVER_SCOPE", ["lastActivityTime"])
            except Exception:
                log.failure("could not read the activity of device {device}", device=device_id)
                continue
            if _value(stored, "lastActivityTime") + limit > now:
                continue  # another node heard it: that node tracks it now
            self.transitions += 1
            out.append(device_id)
        return out

    def _write(self, device_id, values, now):
        d = self.store.save_attributes(device_id, "SERVER_SCOPE", values, now)
        if self.live is not None:
            d.addCallback(lambda _: self.live.attributes_stored(device_id, "SERVER_SCOPE", values, now))
        return d.addErrback(lambda f: log.failure("could not save activity of device {device}", f, device=device_id))


def _value(stored, key):
    """A stored attribute's value: ``active`` as stored (None if absent), a time as an int (0 if
    absent or not a whole number, as an operator might have written it)."""
    found = stored.get(key)
    if key == "active":
        return None if found is None else found[0]
    value = found[0] if found is not None else 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
