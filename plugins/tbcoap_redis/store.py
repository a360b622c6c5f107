"""RedisStore: the IStore in Redis, one Lua script per call (atomic, one round trip).

Calls are sent without waiting for each other on one connection, so a burst of devices shares
round trips; with ``wait=N`` the writes of one reactor turn share one ``WAIT``.  How values and
records are kept is in records.py, the scripts in lua/.
"""

from __future__ import annotations

import json
import time
from collections import deque

import txredisapi
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from tbcoap.errors import BadRequest, NotFound, NotSupported, StoreUnavailable
from tbcoap.interfaces import IStore
from tbcoap.latency import LatencyHistogram
from tbcoap.models import ACCESS_TOKEN, PROVISION_TYPES, SCOPES, ClaimRequest, Credentials, Rpc, new_id, now_ms
from tbcoap.rollupkit import usable
from tbcoap.storekit import (
    STALLED_WRITE,
    check, check_scope,
    check_aggregate,
    check_deletion,
    check_expiry,
    check_claim_request,
    check_credentials,
    check_device_query,
    check_entries,
    check_page,
    check_rpc,
    check_status_change,
    check_values,
    is_id,
    is_int64,
    key_list,
)

from . import scripts
from .aggregate import CHUNK, Buckets
from .rollups import RollupCalls
from .bus import RedisBus
from .management import ManagementCalls
from .ota import OtaCalls
from .connection import Redis
from .records import REFUSALS, as_device, as_point, as_profile, as_rpc, encode, fold, pairs

TELEMETRY_BATCH = 500  # telemetry saves sharing one script call


@implementer(IStore)
class RedisStore(RollupCalls, ManagementCalls, OtaCalls):
    """Devices, credentials, profiles, telemetry, attributes, RPCs, customers, claim requests
    and provisioned marks in Redis, shared by every node that uses the same URL and prefix."""

    name = "redis"
    backup_type = None  # Redis keeps its own backups: backup() fails with NotSupported

    def __init__(self, url, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.reactor = reactor
        self.redis = Redis(url, reactor)
        self._sha = {}
        self._state = "new"
        self._writes = deque()  # start times of writes not answered yet, oldest first
        self.commit_latency = LatencyHistogram()  # seconds from a write script's call to its reply
        self._bus = None
        self._waiting_replicas = None
        self._telemetry = deque()  # (save, Deferred) of telemetry saves waiting for this turn's call
        self._telemetry_flush = None
        self.counters = {"writes": 0, "failedWrites": 0, "reads": 0, "commits": 0, "reconnects": 0}

    # -- life cycle ------------------------------------------------------------

    @defer.inlineCallbacks
    def open(self):
        if self._state == "open":
            return
        if self._state != "new":
            raise StoreUnavailable(f"redis store is {self._state}")
        self._state = "opening"
        try:
            yield self.redis.connect()
            yield self._load_scripts()
            yield self._eval("ensure_default_profile", new_id(), now_ms())
        except Exception as exc:
            yield self.redis.close()
            self._state = "new"
            raise StoreUnavailable(f"cannot use redis at {self.url.shown()}: {exc}") from None
        self._state = "open"

    @defer.inlineCallbacks
    def _load_scripts(self):
        for name, source in scripts.SCRIPTS.items():
            self._sha[name] = yield self.redis.call("SCRIPT", "LOAD", source)

    @defer.inlineCallbacks
    def close(self):
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._state = "closing"
        while self._writes:  # answer what is under way first
            yield _sleep(self.reactor, 0.01)
        yield self.redis.close()  # the node closes the bus it started, before this
        self._state = "closed"

    def check(self):
        if self._writes and time.monotonic() - self._writes[0] > STALLED_WRITE:
            return defer.fail(StoreUnavailable(
                f"redis writes have waited {time.monotonic() - self._writes[0]:.1f} s"))
        if self._state != "open":
            return defer.fail(StoreUnavailable(f"redis store is {self._state.replace('new', 'not open')}"))
        return self.redis.call("PING").addCallback(lambda _: None)

    def backup(self, path):
        return defer.fail(NotSupported(
            "the redis store is backed up by Redis itself: BGSAVE (an RDB snapshot) or the AOF; "
            "copy the dump.rdb or appendonly files Redis writes"))

    def stats(self):
        return {"queueDepth": len(self._writes), **self.counters,
                "oldestWriteWait": round(time.monotonic() - self._writes[0], 3) if self._writes else 0.0}

    def bus(self):
        """The bus between the nodes sharing this Redis (pub/sub as a wake-up)."""
        if self._bus is None:
            self._bus = RedisBus(self.redis, f"{self.url.prefix}:events", self.reactor)
        return self._bus

    # -- running scripts -------------------------------------------------------------

    def _run(self, name, *args):
        """Deferred reply of script ``name`` with ARGV = prefix, args (the store must be open)."""
        if self._state != "open":
            return defer.fail(StoreUnavailable(f"redis store is {self._state.replace('new', 'not open')}"))
        return self._eval(name, *args)

    def _eval(self, name, *args):
        d = self.redis.call("EVALSHA", self._sha[name], 0, self.url.prefix, *args)
        d.addErrback(self._reload, name, args)
        return d

    def _reload(self, failure, name, args):
        """Redis forgot the scripts (a restart, a failover): load them again and retry once."""
        failure.trap(txredisapi.ResponseError)
        if not failure.getErrorMessage().startswith("NOSCRIPT"):
            return failure
        self.counters["reconnects"] += 1
        d = self._load_scripts()
        d.addCallback(lambda _: self.redis.call("EVALSHA", self._sha[name], 0, self.url.prefix, *args))
        return d

    def _read(self, name, *args):
        self.counters["reads"] += 1
        return self._run(name, *args)

    def _write(self, name, what, *args):
        """Run a writing script; refusal codes become errors, and with ``wait`` the write waits for
        its replicas (one WAIT for the writes of a reactor turn)."""
        self._writes.append(time.monotonic())
        d = self._run(name, *args)
        d.addCallback(self._refusal, what)
        if self.url.wait:
            d.addCallback(self._replicated)
        d.addBoth(self._written)
        return d

    def _refusal(self, reply, what):
        if isinstance(reply, str) and reply in REFUSALS:
            raise REFUSALS[reply](what)
        return reply

    def _replicated(self, reply):
        if self._waiting_replicas is None:
            waiting = self._waiting_replicas = defer.Deferred()

            def wait():
                self._waiting_replicas = None
                timeout_ms = int(self.url.timeout * 800)  # answered before the call's own timeout
                d = self.redis.call("WAIT", self.url.wait, timeout_ms)
                d.chainDeferred(waiting)

            self.reactor.callLater(0, wait)
        d = defer.Deferred()
        self._waiting_replicas.addBoth(lambda result: (d.callback(result), result)[1])
        return d.addCallback(self._enough_replicas, reply)

    def _enough_replicas(self, acknowledged, reply):
        if int(acknowledged) < self.url.wait:
            raise StoreUnavailable(f"only {acknowledged} of {self.url.wait} redis replicas acknowledged the write")
        return reply

    def _written(self, result):
        self.commit_latency.observe(time.monotonic() - self._writes.popleft())  # replies come in order
        if isinstance(result, Failure):
            self.counters["failedWrites"] += 1
        else:
            self.counters["writes"] += 1
            self.counters["commits"] += 1
        return result

    # -- devices and profiles --------------------------------------------------

    def add_device(self, device, token):
        if not is_id(token):
            return defer.fail(BadRequest("an access token is required"))
        d = self._write("add_device", "device", device.id, device.name, device.type, device.label or "",
                        device.created_time, device.customer_id or "", token, fold(device.name),
                        device.additional_info or "", device.transport_configuration or "")
        return d.addCallback(lambda _: device)

    def update_device(self, device):
        d = self._write("update_device", "device", device.id, device.name, device.type, device.label or "",
                        device.additional_info or "", fold(device.name), device.transport_configuration or "")
        return d.addCallback(as_device)

    def _device_by(self, index, value):
        if not isinstance(value, str):
            return defer.succeed(None)
        return self._read("device_by", index, value).addCallback(lambda row: as_device(row) if row else None)

    def get_device(self, device_id):
        return self._device_by("", device_id)

    def device_by_name(self, name):
        return self._device_by("dev:name", name)

    def device_by_credentials(self, credentials_type, credentials_id):
        if not is_id(credentials_id):
            return defer.succeed(None)
        d = self._read("device_by", "token", credentials_id, credentials_type)
        return d.addCallback(lambda row: as_device(row) if row else None)

    def list_devices(self, limit, offset, text_search=None, sort_property="createdTime", descending=False):
        return self._device_page("", limit, offset, text_search, sort_property, descending)

    def list_customer_devices(self, customer_id, limit, offset, text_search=None, sort_property="createdTime",
                              descending=False):
        if not is_id(customer_id):
            return defer.succeed(([], 0))
        return self._device_page(customer_id, limit, offset, text_search, sort_property, descending)

    def _device_page(self, customer_id, limit, offset, text_search, sort_property, descending):
        try:
            check_device_query(limit, offset, text_search, sort_property)
        except BadRequest:
            return defer.fail()
        d = self._read("list_devices", sort_property, "1" if descending else "0", offset, limit,
                       fold(text_search or ""), customer_id)
        return d.addCallback(lambda reply: ([as_device(row) for row in reply[1:]], int(reply[0])))

    def delete_device(self, device_id):
        return self._write("delete_device", "device", device_id).addCallback(lambda n: int(n) == 1)

    def get_credentials(self, device_id):
        def build(row):
            token, kind, value = row
            return Credentials(kind or ACCESS_TOKEN, token, value) if token else None

        return self._read("get_credentials", device_id).addCallback(build)

    def set_credentials(self, device_id, credentials):
        try:
            check_credentials(credentials)
        except BadRequest:
            return defer.fail()
        d = self._write("set_credentials", "device", device_id, credentials.id, credentials.type,
                        credentials.value or "")
        return d.addCallback(lambda _: None)

    def add_profile(self, profile):
        if profile.provision_type not in PROVISION_TYPES:
            return defer.fail(BadRequest(f"unknown provision type {profile.provision_type!r}"))
        d = self._write("add_profile", "device profile", profile.id, profile.name, profile.provision_type,
                        profile.provision_key or "", profile.provision_secret or "", profile.created_time,
                        profile.transport_configuration or "")
        return d.addCallback(lambda _: profile)

    def update_profile(self, profile):
        if profile.provision_type not in PROVISION_TYPES:
            return defer.fail(BadRequest(f"unknown provision type {profile.provision_type!r}"))
        d = self._write("update_profile", "device profile", profile.id, profile.name, profile.provision_type,
                        profile.provision_key or "", profile.provision_secret or "",
                        profile.transport_configuration or "")
        return d.addCallback(as_profile).addErrback(_no_such, "device profile")

    def _profile_by(self, index, value):
        if not isinstance(value, str) or not value:
            return defer.succeed(None)
        return self._read("profile_by", index, value).addCallback(lambda row: as_profile(row) if row else None)

    def profile_by_name(self, name):
        return self._profile_by("name", name)

    def profile_by_provision_key(self, key):
        return self._profile_by("key", key)

    def _page(self, what, fields, build, limit, offset):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()
        d = self._read("page", what, offset, limit, *fields)
        return d.addCallback(lambda reply: ([build(row) for row in reply[1:]], int(reply[0])))

    def list_profiles(self, limit, offset):
        return self._page("profs", ("id", "name", "type", "key", "secret", "created", "transport"), as_profile, limit,
                          offset)

    def mark_provisioned(self, device_id):
        d = self._write("mark_provisioned", "device", device_id, f"{now_ms()}|Sprovisioned")
        return d.addCallback(lambda n: int(n) == 1)

    # -- telemetry ---------------------------------------------------------------

    def save_telemetry(self, device_id, entries, ttl=None):
        try:
            check(ttl is None or is_int64(ttl, 0), "ttl must be milliseconds (an integer >= 0)")
            rows = check_entries(entries)
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)
        save = [device_id, [[str(ts), key, encode(kind, data)] for ts, key, kind, data in rows]]
        if ttl:
            save.append(ttl)
        if self._state != "open":
            return defer.fail(StoreUnavailable(f"redis store is {self._state.replace('new', 'not open')}"))
        self._writes.append(time.monotonic())
        d = defer.Deferred()
        self._telemetry.append((save, d))
        if self._telemetry_flush is None:
            self._telemetry_flush = self.reactor.callLater(0, self._flush_telemetry)
        d.addCallback(self._refusal, "device")
        if self.url.wait:
            d.addCallback(self._replicated)
        d.addBoth(self._written)
        return d.addCallback(lambda _: None)

    def _flush_telemetry(self):
        """The telemetry saves of a reactor turn in one script call (TELEMETRY_BATCH at most each)."""
        self._telemetry_flush = None
        while self._telemetry:
            batch = [self._telemetry.popleft() for _ in range(min(len(self._telemetry), TELEMETRY_BATCH))]
            saves = json.dumps([save for save, _ in batch], separators=(",", ":"), ensure_ascii=False)
            d = self._eval("save_telemetry", saves)  # (also while closing: these were accepted before)
            d.addCallbacks(_answer_each, _fail_each, callbackArgs=(batch,), errbackArgs=(batch,))

    def expire_telemetry(self, now, older_than, limit):
        try:
            check_expiry(now, older_than, limit)
        except BadRequest as exc:
            return defer.fail(exc)
        d = self._write("expire_telemetry", "telemetry", now, "" if older_than is None else older_than, limit)
        return d.addCallback(lambda reply: (int(reply[0]), bool(int(reply[1]))))

    def delete_telemetry(self, device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        try:
            keys = check_deletion(keys, start_ts, end_ts)
        except BadRequest as exc:
            return defer.fail(exc)
        d = self._write("delete_telemetry", "device", device_id, start_ts, end_ts, "1" if delete_latest else "0",
                        "1" if rewrite_latest else "0", *keys)
        return d.addCallback(lambda _: None)

    def latest_telemetry(self, device_id, keys):
        try:
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)
        if keys == []:
            return defer.succeed({})
        d = self._read("latest", device_id, *(keys or ()))
        return d.addCallback(lambda flat: {key: as_point(member) for key, member in pairs(flat).items()})

    def telemetry_history(self, device_id, keys, start_ts, end_ts, limit, descending):
        try:
            keys = key_list(keys)
            check(is_int64(start_ts) and is_int64(end_ts), "start and end must be integer timestamps")
            check(is_int64(limit, 1), "limit must be a positive integer")
        except BadRequest as exc:
            return defer.fail(exc)
        if keys == []:
            return defer.succeed({})
        d = self._read("history", device_id, start_ts, end_ts, limit, "1" if descending else "0", *(keys or ()))
        return d.addCallback(lambda flat: {key: [as_point(m) for m in points] for key, points in pairs(flat).items()})

    def telemetry_aggregate(self, device_id, keys, start_ts, end_ts, interval, agg, limit, descending):
        try:
            keys = key_list(keys)
            check_aggregate(start_ts, end_ts, interval, agg, limit)
        except BadRequest as exc:
            return defer.fail(exc)
        return self._aggregate(device_id, keys, start_ts, end_ts, interval, agg, limit, descending)

    @defer.inlineCallbacks
    def _aggregate(self, device_id, keys, start_ts, end_ts, interval, agg, limit, descending):
        if keys is None:
            keys = yield self.telemetry_keys(device_id)
        out = {}
        planned = self.rollups and usable(start_ts, end_ts, interval)
        for key in keys:
            found = (yield self._rollup_answer(device_id, key, start_ts, end_ts, interval, agg, limit, descending)
                     ) if planned else None
            if found is not None:
                if found:
                    out[key] = found
                continue
            buckets = Buckets(agg)
            cursor, other = (f"({end_ts}", str(start_ts)) if descending else (str(start_ts), f"({end_ts}")
            while cursor and not buckets.complete(limit):
                flat = yield self._read("aggregate", device_id, key, cursor, other, start_ts, interval, agg,
                                        CHUNK, "1" if descending else "0")
                cursor = flat[0]
                buckets.add(flat[1:])
            if buckets.states:
                out[key] = buckets.points(start_ts, end_ts, interval, limit, descending)
        return out

    def telemetry_keys(self, device_id):
        return self._read("latest", device_id).addCallback(lambda flat: sorted(flat[::2]))

    def count_telemetry_keys(self, device_id, keys):
        return self._count_keys("tsl", device_id, "", keys)

    def count_attribute_keys(self, device_id, scope, keys):
        return self._count_keys("attr", device_id, scope, keys)

    def telemetry_key_page(self, device_id, limit, offset):
        return self._key_page("tsl", device_id, "", limit, offset)

    def attribute_key_page(self, device_id, scope, limit, offset):
        return self._key_page("attr", device_id, scope, limit, offset)

    def _key_page(self, hash_name, device_id, scope, limit, offset):
        try:
            check(hash_name == "tsl" or scope in SCOPES, f"unknown attribute scope {scope!r}")
            check(is_int64(limit, 1) and is_int64(offset, 0), "limit must be positive and offset at least 0")
        except BadRequest as exc:
            return defer.fail(exc)
        d = self._read("key_page", hash_name, device_id, scope, limit, offset)
        return d.addCallback(lambda reply: (list(reply[1:]), int(reply[0])))

    def _count_keys(self, hash_name, device_id, scope, keys):
        try:
            check(hash_name == "tsl" or scope in SCOPES, f"unknown attribute scope {scope!r}")
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)
        d = self._read("count_keys", hash_name, device_id, scope, *keys)
        return d.addCallback(lambda reply: (int(reply[0]), list(reply[1:])))

    # -- attributes --------------------------------------------------------------

    def save_attributes(self, device_id, scope, values, ts):
        try:
            check_scope(scope)
            check(is_int64(ts), f"timestamp must be a 64-bit integer, not {ts!r}")
            rows = check_values(values)
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)
        args = []
        for key, kind, data in rows:
            args += (key, f"{ts}|{encode(kind, data)}")
        return self._write("save_attributes", "device", device_id, scope, *args).addCallback(lambda _: None)

    def get_attributes(self, device_id, scope, keys):
        try:
            check_scope(scope)
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)
        if keys == []:
            return defer.succeed({})

        def build(flat):
            out = {}
            for key, member in pairs(flat).items():
                ts, value = as_point(member)
                out[key] = (value, ts)
            return out

        return self._read("get_attributes", device_id, scope, *(keys or ())).addCallback(build)

    def delete_attributes(self, device_id, scope, keys):
        try:
            check_scope(scope)
            check(keys is not None, "the keys to delete are required")
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)
        return self._write("delete_attributes", "device", device_id, scope, *keys).addCallback(list)

    # -- server-side RPCs ----------------------------------------------------------

    def add_rpc(self, rpc):
        try:
            check_rpc(rpc)
        except BadRequest:
            return defer.fail()
        d = self._write("add_rpc", "RPC", rpc.id, rpc.device_id, rpc.method, rpc.params_json,
                        "1" if rpc.oneway else "0", "1" if rpc.persistent else "0", rpc.expiration_time,
                        rpc.created_time, rpc.status, "\0" if rpc.response_json is None else rpc.response_json)
        return d.addCallback(lambda n: Rpc(**{**_fields(rpc), "request_id": int(n)}))

    def get_rpc(self, rpc_id):
        if not isinstance(rpc_id, str):
            return defer.succeed(None)
        return self._read("get_rpc", rpc_id).addCallback(lambda row: as_rpc(row) if row else None)

    def rpc_by_request_id(self, device_id, request_id):
        if not is_int64(request_id) or not isinstance(device_id, str):
            return defer.succeed(None)
        return self._read("get_rpc", "", device_id, request_id).addCallback(lambda row: as_rpc(row) if row else None)

    def set_rpc_status(self, rpc_id, status, response_json=None, expect=None):
        try:
            expect = check_status_change(status, response_json, expect)
        except BadRequest:
            return defer.fail()
        if expect is not None and not expect:
            return defer.succeed(False)
        d = self._write("set_rpc_status", "RPC", rpc_id, status,
                        "\0" if response_json is None else response_json, *(expect or ()))
        return d.addCallback(lambda n: int(n) == 1)

    def pending_rpcs(self, device_id=None):
        return self._read("pending_rpcs", device_id or "").addCallback(lambda rows: [as_rpc(r) for r in rows])

    def list_rpcs(self, device_id, limit, offset):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()
        d = self._read("list_rpcs", device_id, offset, limit)
        return d.addCallback(lambda reply: ([as_rpc(row) for row in reply[1:]], int(reply[0])))

    def delete_rpc(self, rpc_id):
        return self._write("delete_rpc", "RPC", rpc_id).addCallback(lambda n: int(n) == 1)

    # -- claim requests ------------------------------------------------------------------

    def put_claim_request(self, request, now):
        try:
            check_claim_request(request, now)
        except BadRequest:
            return defer.fail()
        d = self._write("put_claim", "device", request.device_id, request.secret, request.expiration_time, now)
        return d.addCallback(lambda n: int(n) == 1)

    def get_claim_request(self, device_id):
        d = self._read("get_claim", device_id)
        return d.addCallback(lambda row: ClaimRequest(device_id, row[0], int(row[1])) if row else None)

    def delete_claim_request(self, device_id):
        return self._write("delete_claim", "device", device_id).addCallback(lambda n: int(n) == 1)


def _no_such(failure, what):
    """The scripts say NOTFOUND for any missing record; name the right one."""
    failure.trap(NotFound)
    raise NotFound(f"no such {what}")


def _answer_each(replies, batch):
    for reply, (_, d) in zip(replies, batch):
        d.callback(reply)


def _fail_each(failure, batch):
    for _, d in batch:
        d.errback(failure)


def _fields(rpc):
    return {name: getattr(rpc, name) for name in rpc.__dataclass_fields__}


def _sleep(reactor, seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)
