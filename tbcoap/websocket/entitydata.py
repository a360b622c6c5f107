"""ThingsBoard 4's ENTITY_DATA command where it applies to devices: a query of one device
(``singleEntity``) or a list of them (``entityList`` of DEVICE), with ``latestCmd`` (latest values
kept up to date), ``tsCmd`` (a time window, then every new point) and ``historyCmd`` (one read).

The first command of a ``cmdId`` carries the ``query`` and is answered with the page of entities
and the latest values it asks (``entityFields``, ``latestValues``); later commands of the same
``cmdId`` (ThingsBoard's widgets send ``tsCmd`` or ``latestCmd`` alone) use that query.  Updates
are ThingsBoard's EntityDataUpdate: ``{"cmdId", "errorCode", "errorMsg", "data": page or null,
"update": [EntityData] or null, "allowedEntities", "cmdUpdateType": "ENTITY_DATA"}``, an
EntityData being ``{"entityId", "latest": {keyType: {key: {"ts","value"}}}, "timeseries": {key:
[{"ts","value"}]}}``.  Other entity filters are refused with errorCode 2.
"""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import NotFound
from tbcoap.services.live import ATTRIBUTES, TIMESERIES
from tbcoap.websocket.commands import NO_ERROR, BadCommand, ts_value
from tbcoap.websocket.reads import DEFAULT_LIMIT, read_points

MAX_ENTITIES = 100  # devices in one query (ThingsBoard's allowedEntities)
ATTRIBUTE_SCOPES = {"ATTRIBUTE": None, "CLIENT_ATTRIBUTE": "CLIENT_SCOPE", "SHARED_ATTRIBUTE": "SHARED_SCOPE",
                    "SERVER_ATTRIBUTE": "SERVER_SCOPE"}
KEY_TYPES = ("ENTITY_FIELD", "TIME_SERIES", *ATTRIBUTE_SCOPES)


class EntityData:
    """The query of one ``cmdId`` (its devices) and the subscriptions its commands opened."""

    def __init__(self, cmd_id, devices, send):
        self.cmd_id, self.devices, self._send = cmd_id, devices, send
        self.subs = []
        self.live = None
        self.held = None  # updates kept back while an answer is being read

    def send(self, msg):
        if self.held is not None:
            self.held.append(msg)
        else:
            self._send(msg)

    def hold(self):
        if self.held is None:
            self.held = []

    def release(self):
        held, self.held = self.held or [], None
        for msg in held:
            self._send(msg)

    @property
    def size(self):
        return max(1, len(self.subs))

    def stop(self):
        for sub in self.subs:
            self.live.close(sub)
        self.subs = []


def message(cmd_id, data=None, update=None, code=NO_ERROR, error=None):
    return {"cmdId": cmd_id, "errorCode": code, "errorMsg": error, "data": data, "update": update,
            "allowedEntities": MAX_ENTITIES, "cmdUpdateType": "ENTITY_DATA"}


def entity(device_id, latest=None, timeseries=None):
    return {"entityId": {"entityType": "DEVICE", "id": device_id}, "latest": latest or {},
            "timeseries": timeseries or {}}


@defer.inlineCallbacks
def start(session, command):
    """Run an ENTITY_DATA command of ``session``."""
    body, cmd_id = command.body, command.cmd_id
    held = session.subs.get(cmd_id)
    query = body.get("query")
    if query is not None:
        if held is not None:
            session.end(cmd_id)
        devices = yield _devices(session, query, cmd_id)
        held = EntityData(cmd_id, devices, session.send)
        held.live = session.core.live
        session.subs[cmd_id] = held
        rows = []
        for device in devices:
            latest = yield _latest(session, device, _keys(query.get("entityFields"), cmd_id)
                                   + _keys(query.get("latestValues"), cmd_id))
            rows.append(entity(device.id, latest))
        session.send(message(cmd_id, data={"data": rows, "totalPages": 1, "totalElements": len(rows),
                                           "hasNext": False}))
    elif not isinstance(held, EntityData):
        raise BadCommand("Query is empty!", cmd_id)
    if body.get("historyCmd") is not None:
        yield _history(session, held, _object(body, "historyCmd", cmd_id), once=True)
    if body.get("tsCmd") is not None:
        yield _history(session, held, _object(body, "tsCmd", cmd_id), once=False)
    if body.get("latestCmd") is not None:
        _subscribe_latest(session, held, _keys(_object(body, "latestCmd", cmd_id).get("keys"), cmd_id))


def _object(body, name, cmd_id):
    value = body[name]
    if not isinstance(value, dict):
        raise BadCommand(f"{name} must be an object", cmd_id)
    return value


@defer.inlineCallbacks
def _devices(session, query, cmd_id):
    """The devices the query's filter names that this key may see (others are left out)."""
    if not isinstance(query, dict) or not isinstance(query.get("entityFilter"), dict):
        raise BadCommand("Query is empty!", cmd_id)
    flt = query["entityFilter"]
    if flt.get("type") == "singleEntity":
        ref = flt.get("singleEntity") or {}
        ids = [ref.get("id")] if ref.get("entityType", "DEVICE") == "DEVICE" else []
    elif flt.get("type") == "entityList" and flt.get("entityType", "DEVICE") == "DEVICE":
        ids = flt.get("entityList") or []
    else:
        raise BadCommand(f"entity filter {flt.get('type')!r} is not served: singleEntity or entityList of DEVICE",
                         cmd_id)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadCommand("entity ids must be strings", cmd_id)
    if len(ids) > MAX_ENTITIES:
        raise BadCommand(f"at most {MAX_ENTITIES} entities in one query", cmd_id)
    devices = []
    for device_id in dict.fromkeys(ids):
        try:
            devices.append((yield session.device(device_id)))
        except NotFound:
            continue
    return devices


def _keys(raw, cmd_id):
    """``[(type, key)]`` of a list of ThingsBoard EntityKeys."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > 100:
        raise BadCommand("keys must be a list of at most 100 {type, key}", cmd_id)
    out = []
    for item in raw:
        kind, key = (item.get("type"), item.get("key")) if isinstance(item, dict) else (None, None)
        if kind not in KEY_TYPES or not isinstance(key, str):
            raise BadCommand(f"a key must be {{type, key}} with type one of {', '.join(KEY_TYPES)}", cmd_id)
        out.append((kind, key))
    return out


@defer.inlineCallbacks
def _latest(session, device, keys):
    """``{keyType: {key: {"ts","value"}}}`` of the device now."""
    out = {}
    fields = [k for t, k in keys if t == "ENTITY_FIELD"]
    if fields:
        known = {"name": device.name, "type": device.type, "label": device.label or "",
                 "createdTime": device.created_time,
                 "additionalInfo": device.additional_info or ""}
        out["ENTITY_FIELD"] = {k: {"ts": device.created_time, "value": str(known.get(k, ""))} for k in fields}
    series = [k for t, k in keys if t == "TIME_SERIES"]
    if series:
        found = yield session.core.telemetry.latest(device.id, series)
        out["TIME_SERIES"] = {k: ts_value(ts, v) for k, (ts, v) in found.items()}
    for kind, scope in ATTRIBUTE_SCOPES.items():
        wanted = [k for t, k in keys if t == kind]
        if not wanted:
            continue
        values = {}
        for one in ([scope] if scope else ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE")):
            found = yield session.core.attributes.get(device.id, one, wanted)
            values.update({k: ts_value(ts, v) for k, (v, ts) in found.items()})
        out[kind] = values
    return out


def _subscribe_latest(session, held, keys):
    """latestCmd: each device's keys kept up to date; the current values are sent first (as an
    update), then every newer one."""
    for device in held.devices:
        series = frozenset(k for t, k in keys if t == "TIME_SERIES")
        if series:
            _open(session, held, device.id, TIMESERIES, series, None, "TIME_SERIES", latest_only=True)
        for kind, scope in ATTRIBUTE_SCOPES.items():
            wanted = frozenset(k for t, k in keys if t == kind)
            if wanted:
                _open(session, held, device.id, ATTRIBUTES, wanted, scope, kind, latest_only=True)


def _open(session, held, device_id, kind, keys, scope, key_type, latest_only, first=None, on_first=None):
    """A subscription of the device for ``held``: ``key_type`` None sends time series, else latest
    values under that key type.  With ``on_first``, the first values (``first()``) go to it
    instead of to the client."""
    session.room(held.cmd_id)
    waiting = [on_first] if on_first is not None else []

    def deliver(data):
        if waiting:
            return waiting.pop()(data)
        if not data:
            return
        if key_type is None:
            row = entity(device_id, timeseries={k: [ts_value(ts, v) for ts, v in sorted(points, key=lambda p: p[0])]
                                                for k, points in data.items()})
        else:
            row = entity(device_id, latest={key_type: {k: ts_value(*max(points, key=lambda p: p[0]))
                                                       for k, points in data.items()}})
        held.send(message(held.cmd_id, update=[row]))

    sub = session.subscription(device_id, kind, held.cmd_id, deliver, keys=keys, scope=scope,
                               latest_only=latest_only)
    held.subs.append(sub)
    d = session.core.live.open(sub, first)
    d.addErrback(lambda f: session.send(message(held.cmd_id, code=1, error=f.getErrorMessage())))
    return d


@defer.inlineCallbacks
def _history(session, held, cmd, once):
    """historyCmd (``once``): the points of [startTs, endTs]; tsCmd: the points of [startTs, startTs +
    timeWindow] and from then on every new one.  A tsCmd's subscriptions start before the window
    is read (the window is their first values), so no point falls between the answer and the
    updates; updates wait until the answer is out."""
    keys = cmd.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or not keys:
        raise BadCommand("keys must be a non-empty list of time-series keys", held.cmd_id)
    start = _int(cmd, "startTs", held.cmd_id)
    end = start + _int(cmd, "timeWindow", held.cmd_id) if not once else _int(cmd, "endTs", held.cmd_id)
    limit = _int(cmd, "limit", held.cmd_id) or DEFAULT_LIMIT
    agg, interval = cmd.get("agg") or "NONE", _int(cmd, "interval", held.cmd_id)

    def reader(device):
        return lambda: read_points(session.core, session.principal.caller, device.id, frozenset(keys), start, end,
                                   limit, agg, interval, descending=False)

    windows = {}
    if once:
        for device in held.devices:
            windows[device.id] = yield reader(device)()
    else:
        held.hold()
        opened = [_open(session, held, device.id, TIMESERIES, frozenset(keys), None, None, latest_only=False,
                        first=reader(device), on_first=lambda data, d=device.id: windows.__setitem__(d, data))
                  for device in held.devices]
        yield defer.gatherResults(opened)
    rows = [entity(d.id, timeseries={k: [ts_value(ts, v) for ts, v in p] for k, p in windows.get(d.id, {}).items()})
            for d in held.devices]
    session.send(message(held.cmd_id, data={"data": rows, "totalPages": 1, "totalElements": len(rows),
                                            "hasNext": False}))
    if not once:
        held.release()


def _int(cmd, name, cmd_id):
    value = cmd.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise BadCommand(f"{name} must be a whole number", cmd_id)
    return int(value)

