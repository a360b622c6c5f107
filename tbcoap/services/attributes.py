"""Attributes in the three scopes: device uploads and requests, operator reads and writes."""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure

from tbcoap.errors import BadRequest
from tbcoap.models import OPERATOR_SCOPES, SCOPES, now_ms, plain
from tbcoap.events import SharedAttributesChanged, SharedAttributesDeleted
from tbcoap.services.keycap import KeyCap
from tbcoap.services.values import Limits, parse_attributes, parse_json



def _value(found, key, default=0):
    item = found.get(key)
    return default if item is None else item[0]


def check_scope(scope, writable=False):
    """``scope`` if it is one of the three (and writable by an operator when asked)."""
    allowed = OPERATOR_SCOPES if writable else SCOPES
    if scope not in allowed:
        raise BadRequest(f"scope must be one of {', '.join(allowed)}")
    return scope


class AttributeService:
    """Typed attributes; SERVER_SCOPE reads include the live activity values."""

    def __init__(self, store, activity, bus, rules=None, limits: Limits = Limits(), keycap=None):
        self.store = store
        self.keycap = keycap or KeyCap(store)  # the cap on a device's distinct keys (per scope)
        self.activity = activity
        self.bus = bus
        self.rules = rules
        self.limits = limits
        self.live = None  # the LiveService: told of client and server attribute changes
        self.power = None  # the PowerService: a device's power settings (a sleeping device's cycle)

    def upload_client(self, device, payload: bytes, read=parse_json):
        """Store a device's client attributes (``read``: the bytes to JSON values); None if empty,
        else a Deferred fired on commit."""
        values = parse_attributes(payload, self.limits, read)
        if not values:
            return None
        ts = now_ms()
        d = self._save(device.id, "CLIENT_SCOPE", values, ts)
        if self.live is not None:
            d.addCallback(self._told, device.id, "CLIENT_SCOPE", values, ts)
        if self.rules is not None:
            d.addCallback(lambda _: self.rules.uploaded("tbcoap_attributes_uploaded", device, values=values))
        return d

    def save(self, device_id, scope, payload: bytes):
        """Store attributes an operator sent (SHARED_SCOPE or SERVER_SCOPE); fires the typed values.

        Shared changes are published once committed, so observing devices hear of them.
        """
        check_scope(scope, writable=True)
        values = parse_attributes(payload, self.limits)
        if not values:
            return defer.succeed(values)
        ts = now_ms()
        d = self._save(device_id, scope, values, ts)

        def committed(_):
            if scope == "SHARED_SCOPE":
                self.bus.publish(SharedAttributesChanged(device_id, values, ts))
            elif self.live is not None:
                self.live.attributes_stored(device_id, scope, values, ts)
            return values

        return d.addCallback(committed)

    def _save(self, device_id, scope, values, ts):
        """Save within the key cap: refused whole (TooManyKeys) when new keys would pass it."""
        admitted = self.keycap.admit(device_id, scope, values)
        if admitted is None:
            return self.store.save_attributes(device_id, scope, values, ts)

        def save(new):
            def settle(result):
                self.keycap.settle(device_id, scope, new, not isinstance(result, Failure))
                return result

            return self.store.save_attributes(device_id, scope, values, ts).addBoth(settle)

        return admitted.addCallback(save)

    def _told(self, result, device_id, scope, values, ts):
        self.live.attributes_stored(device_id, scope, values, ts)
        return result

    @defer.inlineCallbacks
    def get(self, device_id, scope, keys=None, device=None):
        """``{key: (value, last_update_ts)}`` of one scope; ``keys`` None means all.  SERVER_SCOPE's
        ``active`` is judged now from the stored times and what this node heard (``device``, the
        Device if the caller has it, saves a read of it)."""
        check_scope(scope)
        server = scope == "SERVER_SCOPE"
        wanted = keys
        if server and keys is not None and "active" in keys:
            keys = list({*keys, "lastActivityTime", "inactivityTimeout"})
        found = yield self.store.get_attributes(device_id, scope, keys)
        if server:
            now = now_ms()
            for key, value in self.activity.current(device_id).items():
                stored = _value(found, key)
                if not isinstance(stored, int) or value > stored:
                    found[key] = (value, now)
            if wanted is None or "active" in wanted:
                if self.power is None:
                    cycle = 0
                elif device is not None:
                    cycle = (yield self.power.settings_of(device)).cycle_ms
                else:
                    cycle = yield self.power.cycle_of(device_id)
                active = self.activity.judge(device_id, found, cycle, now)
                if _value(found, "active", None) is not active:
                    found["active"] = (active, now)
            if wanted is not None:
                found = {key: found[key] for key in wanted if key in found}
        return found

    @defer.inlineCallbacks
    def page(self, device_id, scope, limit, offset):
        """``([(key, value, last_update_ts)], total)``: a page of one scope's attributes in key
        order.  SERVER_SCOPE's live activity values the store does not hold yet (``active`` of a
        device never heard from) come first, then the stored keys; the store reads the page only."""
        check_scope(scope)
        extra = []
        if scope == "SERVER_SCOPE":
            live = sorted(set(self.activity.current(device_id)) | {"active"})
            _, present = yield self.store.count_attribute_keys(device_id, scope, live)
            extra = [key for key in live if key not in set(present)]
        mine = extra[offset:offset + limit]
        stored, total = yield self.store.attribute_key_page(device_id, scope, limit - len(mine) or 1,
                                                             max(0, offset - len(extra)))
        stored = stored[:limit - len(mine)]
        keys = mine + stored
        found = (yield self.get(device_id, scope, keys)) if keys else {}
        return [(key, *found[key]) for key in keys if key in found], total + len(extra)

    def delete(self, device_id, scope, keys):
        """Deferred list of the keys that existed and are now deleted (shared ones are published)."""
        check_scope(scope)

        def committed(deleted):
            if scope == "SHARED_SCOPE" and deleted:
                self.bus.publish(SharedAttributesDeleted(device_id, tuple(deleted)))
            elif self.live is not None:
                self.live.attributes_deleted(device_id, scope, deleted)
            return deleted

        d = self.store.delete_attributes(device_id, scope, keys).addCallback(committed)
        return d.addBoth(self._deleted, device_id)

    def _deleted(self, result, device_id):
        self.keycap.forget(device_id)  # its keys may be fewer now: ask the store again
        return result

    @defer.inlineCallbacks
    def shared_values(self, device_id):
        """All shared attributes of a device as typed values: ``{key: value}``."""
        found = yield self.store.get_attributes(device_id, "SHARED_SCOPE", None)
        return {key: value for key, (value, _ts) in found.items()}

    @defer.inlineCallbacks
    def shared(self, device):
        """All shared attributes of a device, flat and JSON-ready: ``{key: value}``."""
        found = yield self.shared_values(device.id)
        return {key: plain(value) for key, value in found.items()}

    def shared_with_times(self, device):
        """All shared attributes of a device: Deferred ``{key: (typed value, last_update_ts)}``."""
        return self.store.get_attributes(device.id, "SHARED_SCOPE", None)

    @defer.inlineCallbacks
    def for_device(self, device, client_keys, shared_keys):
        """What a device's attribute request answers: ``{"client": {..}, "shared": {..}}``, each
        ``{key: (typed value, last_update_ts)}``.

        A list that is None is not asked for; both None means all of both scopes.
        Empty sections are left out.
        """
        both = client_keys is None and shared_keys is None
        out = {}
        for section, scope, keys in (("client", "CLIENT_SCOPE", client_keys),
                                     ("shared", "SHARED_SCOPE", shared_keys)):
            if both or keys is not None:
                found = yield self.store.get_attributes(device.id, scope, keys)
                if found:
                    out[section] = found
        return out
