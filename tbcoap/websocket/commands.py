"""ThingsBoard's WebSocket commands and updates, as JSON.

Read: ThingsBoard 3's wrapper (``tsSubCmds``, ``attrSubCmds``, ``historyCmds``, ``entityDataCmds``,
``entityDataUnsubscribeCmds``; ThingsBoard's TelemetryCmdsWrapper) and ThingsBoard 4's
(``authCmd`` and ``cmds``, each with a ``type``: TIMESERIES, ATTRIBUTES, TIMESERIES_HISTORY,
ENTITY_DATA, ENTITY_DATA_UNSUBSCRIBE; its WsCommandsWrapper).  A subscription command has
``cmdId``, ``entityType``, ``entityId``, ``keys`` (comma-separated), ``scope`` and
``unsubscribe`` (SubscriptionCmd), a time-series one also ``startTs``, ``timeWindow``,
``interval``, ``limit`` and ``agg`` (TimeseriesSubscriptionCmd); a history command ``keys``,
``startTs``, ``endTs``, ``interval``, ``limit``, ``agg`` (GetHistoryCmd).

Written: ``{"subscriptionId": cmdId, "errorCode", "errorMsg", "data": {key: [[ts, "value"]]},
"latestValues": {key: ts}}`` (TelemetrySubscriptionUpdate; values as ThingsBoard's strings, a
deleted attribute as ``[0, ""]``) and ENTITY_DATA's ``{"cmdId", "errorCode", "errorMsg", "data",
"update", "allowedEntities", "cmdUpdateType"}`` (EntityDataUpdate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tbcoap.models import SCOPES
from tbcoap.services.live import DELETED

NO_ERROR, INTERNAL_ERROR, BAD_REQUEST, UNAUTHORIZED = 0, 1, 2, 3  # ThingsBoard's SubscriptionErrorCode
V3_LISTS = {"tsSubCmds": "TIMESERIES", "attrSubCmds": "ATTRIBUTES", "historyCmds": "TIMESERIES_HISTORY",
            "entityDataCmds": "ENTITY_DATA", "entityDataUnsubscribeCmds": "ENTITY_DATA_UNSUBSCRIBE"}
KINDS = frozenset(V3_LISTS.values())
MAX_COMMANDS = 100  # commands in one message
MAX_KEYS = 100  # keys in one command
AGGREGATIONS = ("NONE", "AVG", "MIN", "MAX", "SUM", "COUNT")
LATEST_TELEMETRY = "LATEST_TELEMETRY"  # ThingsBoard's scope of a time-series subscription: newer points only


class BadCommand(ValueError):
    """A message or command that cannot be read; the text says why (errorCode 2)."""

    def __init__(self, message, cmd_id=0):
        super().__init__(message)
        self.cmd_id = cmd_id


@dataclass
class Command:
    """One command, its fields as ThingsBoard names them (``body`` keeps the whole object)."""

    kind: str
    cmd_id: int
    body: dict = field(repr=False)

    def text(self, name):
        value = self.body.get(name)
        if value is not None and not isinstance(value, str):
            raise BadCommand(f"{name} must be a string", self.cmd_id)
        return value or None

    def number(self, name, default=0):
        value = self.body.get(name, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise BadCommand(f"{name} must be a whole number", self.cmd_id)
        return int(value)

    def keys(self):
        """The ``keys`` list (comma-separated text), or None for every key."""
        text = self.text("keys")
        if text is None:
            return None
        keys = frozenset(k.strip() for k in text.split(",") if k.strip())
        if len(keys) > MAX_KEYS:
            raise BadCommand(f"at most {MAX_KEYS} keys in one command", self.cmd_id)
        return keys or None

    def device_id(self):
        """The DEVICE ``entityId`` (ThingsBoard's "Device id is empty!" when missing)."""
        entity_id = self.text("entityId")
        if not entity_id:
            raise BadCommand("Device id is empty!", self.cmd_id)
        entity_type = self.text("entityType") or "DEVICE"
        if entity_type != "DEVICE":
            raise BadCommand(f"entityType {entity_type} is not served: only DEVICE", self.cmd_id)
        return entity_id

    def scope(self):
        """An attribute subscription's scope (None: all three)."""
        scope = self.text("scope")
        if scope is not None and scope not in SCOPES:
            raise BadCommand(f"scope must be one of {', '.join(SCOPES)}", self.cmd_id)
        return scope

    def aggregation(self):
        agg = (self.text("agg") or "NONE").upper()
        if agg not in AGGREGATIONS:
            raise BadCommand(f"agg must be one of {', '.join(AGGREGATIONS)}", self.cmd_id)
        return agg


def parse(text, allow_v4=True):
    """``(authCmd or None, [Command])`` of one message (``allow_v4``: ``cmds`` is read too);
    BadCommand for anything that is not a wrapper of commands."""
    try:
        message = json.loads(text)
    except ValueError:
        raise BadCommand("Failed to parse the payload") from None
    if not isinstance(message, dict):
        raise BadCommand("Failed to parse the payload")
    auth = message.get("authCmd")
    if auth is not None and not isinstance(auth, dict):
        raise BadCommand("authCmd must be an object")
    raw = []
    for name, kind in V3_LISTS.items():
        raw += [(kind, item) for item in _list(message, name)]
    if allow_v4:
        for item in _list(message, "cmds"):
            kind = item.get("type") if isinstance(item, dict) else None
            raw.append((kind, item))
    if len(raw) > MAX_COMMANDS:
        raise BadCommand(f"at most {MAX_COMMANDS} commands in one message")
    commands = []
    for kind, item in raw:
        if not isinstance(item, dict):
            raise BadCommand("a command must be an object")
        cmd_id = item.get("cmdId", 0)
        if isinstance(cmd_id, bool) or not isinstance(cmd_id, int):
            raise BadCommand("cmdId must be a whole number")
        if cmd_id < 0:
            raise BadCommand("Cmd id is negative value!", cmd_id)
        if kind not in KINDS:
            raise BadCommand(f"command type {kind!r} is not served (TIMESERIES, ATTRIBUTES, TIMESERIES_HISTORY, "
                             "ENTITY_DATA, ENTITY_DATA_UNSUBSCRIBE)", cmd_id)
        commands.append(Command(kind, cmd_id, item))
    return auth, commands


def _list(message, name):
    value = message.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadCommand(f"{name} must be a list")
    return value


def value_text(value) -> str:
    """A typed value as ThingsBoard's ``getValueAsString`` writes it."""
    if value is DELETED:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def update(cmd_id, data):
    """A TelemetrySubscriptionUpdate: ``data`` is ``{key: [(ts, value)]}``."""
    points = {key: [[0 if v is DELETED else ts, value_text(v)] for ts, v in series]
              for key, series in sorted(data.items())}
    latest = {key: series[-1][0] for key, series in points.items() if series}
    return {"subscriptionId": cmd_id, "errorCode": NO_ERROR, "errorMsg": None, "data": points,
            "latestValues": latest}


def error(cmd_id, code, message):
    """A TelemetrySubscriptionUpdate that carries an error."""
    return {"subscriptionId": cmd_id, "errorCode": code, "errorMsg": message, "data": None, "latestValues": {}}


def ts_value(ts, value):
    """ThingsBoard's TsValue ``{"ts","value"}`` (ENTITY_DATA)."""
    return {"ts": ts, "value": value_text(value)}


def encode(message) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
