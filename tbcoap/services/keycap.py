"""The cap on a device's distinct keys (``--max-device-keys``): telemetry keys, and attribute keys
in each scope.

A write whose keys are all known to this node costs a dict lookup and a set test: each device's
keys seen here are kept in an LRU bounded in bytes (``--device-keys-cache``).  Only a key never
seen asks the store, once, how many keys of that kind the device has and which of the request's
keys it has already; the request is refused whole (``TooManyKeys``) when its new keys would take
the device past the cap.  Keys admitted and not yet committed count as the device's (two requests
with new keys at once cannot both pass the last free place on one node), and so do keys committed
while the store was being asked (its answer may be older than that commit): then a request at the
last free place may be refused although it would just fit, never the reverse.  Nodes sharing a store
each keep their own: in a race between nodes, or after another node deleted keys this one still
knows, a device may pass the cap by a few keys (docs/security.md).
"""

from __future__ import annotations

from collections import OrderedDict

from tbcoap.errors import TooManyKeys

TIMESERIES = "TIMESERIES"  # the kind of telemetry keys; attribute keys' kind is their scope
ENTRY_BYTES = 400  # what one device's entry costs without its keys (dicts, sets, the id)
KEY_BYTES = 90  # what one known key costs besides its characters (set slot, str header)
DEFAULT_CACHE_BYTES = 16 << 20


def parse_device_keys(spec) -> tuple[int, int]:
    """``--max-device-keys``: ``"1000"`` (telemetry keys, and attribute keys in each scope) or
    ``"1000,500"`` (telemetry, attributes) -> ``(telemetry, attributes)``."""
    parts = [part.strip() for part in str(spec).split(",")]
    if len(parts) not in (1, 2) or not all(part.isascii() and part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"expected N or TELEMETRY,ATTRIBUTES (positive integers), got {spec!r}")
    return int(parts[0]), int(parts[-1])


class _Known:
    __slots__ = ("kinds", "pending", "asking", "settled", "size")

    def __init__(self):
        self.kinds = {}  # kind -> set of keys the device has (as far as this node knows)
        self.pending = {}  # kind -> {key: requests admitted with it as new and not yet settled}
        self.asking = {}  # kind -> store asks under way
        self.settled = {}  # kind -> {key: settle number}: new keys committed while an ask was under way
        self.size = ENTRY_BYTES


class KeyCap:
    """Admits writes of keys within the cap; ``admit`` before a save, ``settle`` after it."""

    def __init__(self, store, max_telemetry=1000, max_attributes=1000, max_bytes=DEFAULT_CACHE_BYTES):
        self.store = store
        self.max_telemetry = max_telemetry
        self.max_attributes = max_attributes
        self.max_bytes = max_bytes
        self.bytes = 0
        self._devices = OrderedDict()  # device id -> _Known, least recently used first
        self.refused = self.store_asks = self.evictions = 0
        self._settles = 0  # numbers the settles, so an ask knows which came after it began

    def cap(self, kind):
        return self.max_telemetry if kind == TIMESERIES else self.max_attributes

    def admit(self, device_id, kind, keys):
        """None when every key of ``keys`` (a collection) is known for the device (nothing to
        settle); else a Deferred that fires with the keys new to the store (pass them to
        ``settle`` once the save is done) or fails with TooManyKeys."""
        entry = self._devices.get(device_id)
        if entry is not None:
            self._devices.move_to_end(device_id)
            known = entry.kinds.get(kind)
            if known is not None and known.issuperset(keys):
                return None
        keys = set(keys)
        self.store_asks += 1
        asked = self._entry(device_id)
        asked.asking[kind] = asked.asking.get(kind, 0) + 1
        if kind == TIMESERIES:
            d = self.store.count_telemetry_keys(device_id, sorted(keys))
        else:
            d = self.store.count_attribute_keys(device_id, kind, sorted(keys))
        d.addCallback(self._counted, device_id, kind, keys, self._settles)
        return d.addBoth(self._answered, asked, kind)

    @staticmethod
    def _answered(result, asked, kind):
        """One ask of ``asked`` (the entry when it began) is answered: with none left under way, the
        keys settled meanwhile need not be remembered."""
        left = asked.asking[kind] - 1
        if left:
            asked.asking[kind] = left
        else:
            del asked.asking[kind]
            asked.settled.pop(kind, None)
        return result

    def _counted(self, found, device_id, kind, keys, began):
        count, present = found
        present = set(present)
        entry = self._entry(device_id)
        pending = entry.pending.get(kind, {})
        new = keys - present
        waiting = len(pending.keys() - keys)  # others' new keys not yet committed, so not in ``count``
        settled = entry.settled.get(kind)
        if settled:  # committed after the ask began: perhaps not in ``count`` either
            waiting += sum(1 for key, number in settled.items()
                           if number > began and key not in keys and key not in pending)
        cap = self.cap(kind)
        if new and count + waiting + len(new) > cap:
            self.refused += 1
            what = "telemetry keys" if kind == TIMESERIES else f"{kind} attribute keys"
            raise TooManyKeys(f"device would have more than {cap} {what} (--max-device-keys); "
                              f"{len(new)} new in this request")
        self._learn(device_id, entry, kind, present)
        if new:
            pending = entry.pending.setdefault(kind, {})
            for key in new:
                pending[key] = pending.get(key, 0) + 1
            self._learn(device_id, entry, kind, new)
        return new

    def settle(self, device_id, kind, new, ok):
        """The save that ``admit`` let in is done (``ok``) or failed: its new keys stop being
        pending; after a failure the device's entry is dropped (it may know keys never stored)."""
        entry = self._devices.get(device_id)
        if entry is None:
            return
        pending = entry.pending.get(kind)
        if pending:
            asking = ok and kind in entry.asking
            if asking:
                self._settles += 1
                settled = entry.settled.setdefault(kind, {})
            for key in new:
                left = pending.get(key, 0) - 1
                if left > 0:
                    pending[key] = left
                else:
                    pending.pop(key, None)
                    if asking:
                        settled[key] = self._settles
            if not pending:
                del entry.pending[kind]
        if not ok:
            self.forget(device_id)

    def forget(self, device_id):
        """Drop what is known of a device (its keys were deleted, or the device)."""
        entry = self._devices.pop(device_id, None)
        if entry is not None:
            self.bytes -= entry.size

    def _entry(self, device_id):
        entry = self._devices.get(device_id)
        if entry is None:
            entry = self._devices[device_id] = _Known()
            self.bytes += entry.size
        else:
            self._devices.move_to_end(device_id)
        return entry

    def _learn(self, device_id, entry, kind, keys):
        known = entry.kinds.setdefault(kind, set())
        grown = 0
        for key in keys:
            if key not in known:
                known.add(key)
                grown += KEY_BYTES + len(key)
        entry.size += grown
        if device_id in self._devices:
            self.bytes += grown
        while self.bytes > self.max_bytes and len(self._devices) > 1:
            _, old = self._devices.popitem(last=False)
            self.bytes -= old.size
            self.evictions += 1

    def stats(self):
        return {"devices": len(self._devices), "bytes": self.bytes, "refused": self.refused,
                "storeAsks": self.store_asks, "evictions": self.evictions}
