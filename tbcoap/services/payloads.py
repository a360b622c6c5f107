"""What each device profile's devices speak: JSON, or Protobuf with the profile's four schemas.

The device API asks ``cached(profile name)`` on every request (one dict look-up) and
``lookup(profile name)`` when that misses.  Compiled schemas are kept per profile version (a
digest of the profile's transport configuration), so a schema is compiled once per node and
version: when the profile is saved, or on the first request after the node started or another
node saved it; requests that arrive during that one compilation wait for it.  A profile saved
here or on another node (``ProfileChanged``) is looked up again on its devices' next request.
Both maps are bounded; the oldest entry goes first.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet import defer
from twisted.python.failure import Failure

from tbcoap.errors import BadRequest
from tbcoap.events import ProfileChanged, Resync
from tbcoap.payloads.config import JSON_SETTINGS, PROTOBUF, PayloadSettings, schema_key
from tbcoap.payloads.protoc import compile_schema
from tbcoap.payloads.protojson import MessageReader

MAX_PROFILES = 10_000  # profile names remembered
MAX_COMPILED = 1_000  # versions of compiled schemas kept


class ProtobufSchemas:
    """A PROTOBUF profile version's compiled schemas: readers of the telemetry, attributes and
    RPC response root messages, and the RPC request message class."""

    __slots__ = ("telemetry", "attributes", "rpc_request", "rpc_response")

    def __init__(self, compiled):
        self.telemetry = MessageReader(compiled["telemetry"].message)
        self.attributes = MessageReader(compiled["attributes"].message)
        self.rpc_request = compiled["rpc_request"].message
        self.rpc_response = MessageReader(compiled["rpc_response"].message)


class ProfilePayloads:
    """One profile version as its devices' requests need it: ``settings`` and, for PROTOBUF,
    ``schemas`` (None for JSON)."""

    __slots__ = ("profile_id", "settings", "schemas", "__weakref__")

    def __init__(self, profile_id, settings, schemas=None):
        self.profile_id, self.settings, self.schemas = profile_id, settings, schemas

    @property
    def protobuf(self) -> bool:
        return self.schemas is not None


JSON_PAYLOADS = ProfilePayloads(None, JSON_SETTINGS)


@defer.inlineCallbacks
def compile_schemas(settings: PayloadSettings):
    """Deferred ProtobufSchemas of PROTOBUF settings (the four compiled side by side); the first
    schema's SchemaError, in the order telemetry, attributes, RPC request, RPC response."""
    results = yield defer.DeferredList([compile_schema(text, schema_key(purpose))
                                        for purpose, text in settings.schemas], consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return ProtobufSchemas({purpose: value for (purpose, _), (_, value) in zip(settings.schemas, results)})


class PayloadService:
    """Profile name -> ProfilePayloads, and profile version -> compiled schemas."""

    def __init__(self, store, bus, max_profiles=MAX_PROFILES, max_compiled=MAX_COMPILED):
        self.store = store
        self.max_profiles, self.max_compiled = max_profiles, max_compiled
        self._by_name = OrderedDict()  # profile name -> ProfilePayloads
        self._name_of = {}  # profile id -> its name here, so a renamed profile's old name goes too
        self._compiled = OrderedDict()  # version -> ProtobufSchemas
        self._compiling = {}  # version -> [Deferred] waiting for the compilation under way
        self._changes = 0  # bumped by every forget: a look-up that raced a change is not kept
        self.compilations = 0  # schema sets compiled on this node
        # cached(profile name): the ProfilePayloads of a profile looked up before, or None (then call
        # ``lookup``); the map's own get, as it is asked on every request (the map is never replaced)
        self.cached = self._by_name.get
        bus.subscribe(self._on_event)

    @defer.inlineCallbacks
    def lookup(self, profile_name):
        """Deferred ProfilePayloads of the profile of that name (JSON if there is none)."""
        changes = self._changes
        profile = yield self.store.profile_by_name(profile_name)
        if profile is None:
            return JSON_PAYLOADS
        settings = PayloadSettings.of(profile.transport_configuration)
        schemas = (yield self.schemas(settings)) if settings.payload_type == PROTOBUF else None
        payloads = ProfilePayloads(profile.id, settings, schemas)
        if changes == self._changes:
            self._remember(profile_name, payloads)
        return payloads

    def schemas(self, settings: PayloadSettings):
        """Deferred ProtobufSchemas of a PROTOBUF version, compiled unless kept (one compilation per
        version at a time: callers during it wait for it); SchemaError for a bad schema (kept too, so
        a version that does not compile is not compiled again for every request)."""
        kept = self._compiled.get(settings.version)
        if kept is not None:
            self._compiled.move_to_end(settings.version)
            return defer.fail(kept) if isinstance(kept, Failure) else defer.succeed(kept)
        waiting = defer.Deferred()
        if settings.version in self._compiling:
            self._compiling[settings.version].append(waiting)
            return waiting
        self._compiling[settings.version] = [waiting]
        self.compilations += 1
        compile_schemas(settings).addBoth(self._compiled_one, settings.version)
        return waiting

    def _compiled_one(self, result, version):
        failed = isinstance(result, Failure)
        if not failed or result.check(BadRequest):  # a schema's own fault is kept; a crash is tried again
            self._compiled[version] = result
            while len(self._compiled) > self.max_compiled:
                self._compiled.popitem(last=False)
        for waiting in self._compiling.pop(version, ()):
            if failed:
                waiting.errback(result)
            else:
                waiting.callback(result)

    def _remember(self, name, payloads):
        self._by_name[name] = payloads
        if payloads.profile_id is not None:
            self._name_of[payloads.profile_id] = name
        while len(self._by_name) > self.max_profiles:
            old_name, dropped = self._by_name.popitem(last=False)
            if self._name_of.get(dropped.profile_id) == old_name:
                del self._name_of[dropped.profile_id]

    def forget(self, profile_id, name=None):
        """A profile changed: its devices look it up again (O(1))."""
        self._changes += 1
        old = self._name_of.pop(profile_id, None)
        for key in (old, name):
            if key is not None:
                self._by_name.pop(key, None)

    def _on_event(self, event):
        if isinstance(event, ProfileChanged):
            self.forget(event.profile_id, event.name)
        elif isinstance(event, Resync):
            self._changes += 1
            self._by_name.clear()
            self._name_of.clear()

    def stats(self):
        """Profiles and compiled schema versions held, and compilations made on this node."""
        return {"profiles": len(self._by_name), "compiledSchemas": len(self._compiled),
                "schemaCompilations": self.compilations}
