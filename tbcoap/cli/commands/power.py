"""``tbcoap power``: the power-saving settings (PSM, DRX, E_DRX) of a device or a device profile.

A profile keeps them in ThingsBoard's ``profileData.transportConfiguration.clientSettings``, a
device in its ``deviceData.transportConfiguration``; a device's own mode wins over its profile's.
Without options the command shows the settings; with them it changes them (``--mode none``
removes the mode: downlinks go at any time, or, for a device, as its profile says).
"""

from __future__ import annotations

import argparse
import json

from tbcoap.cli.client import segment
from tbcoap.cli.commands.profile import profile_id
from tbcoap.cli.output import fields

MODES = ("PSM", "DRX", "E_DRX", "NONE")
TIMER_OPTIONS = (  # option, dest, ThingsBoard's key
    ("--psm-activity-timer", "psm_activity_timer", "psmActivityTimer"),
    ("--edrx-cycle", "edrx_cycle", "edrxCycle"),
    ("--paging-window", "paging_window", "pagingTransmissionWindow"),
)
KEYS = ("powerMode",) + tuple(key for _, _, key in TIMER_OPTIONS)


def register(commands):
    """Add ``tbcoap power device|profile ...``."""
    group = commands.group("power", "show or change power-saving settings (PSM, DRX, E_DRX)")
    for name, func, ref_help in (
            ("device", device, "the device's id (uuid) or name"),
            ("profile", profile, "the profile's name or id (uuid)")):
        p = group.command(name, func, f"show or change a {name}'s power mode and timers")
        p.add_argument("ref", metavar="NAME_OR_ID", help=ref_help)
        p.add_argument("--mode", type=mode, metavar="MODE",
                       help="psm, drx, e_drx (any case), or none to remove it")
        for option, dest, key in TIMER_OPTIONS:
            p.add_argument(option, dest=dest, type=milliseconds, metavar="MS", help=f"{key} in milliseconds")


def mode(text) -> str:
    """An argparse type: a power mode, in any case, ``-`` for ``_``."""
    value = text.strip().upper().replace("-", "_")
    if value not in MODES:
        raise argparse.ArgumentTypeError(f"must be psm, drx, e_drx or none (got {text!r})")
    return value


def milliseconds(text) -> int:
    """An argparse type: a positive whole number of milliseconds."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number of milliseconds (got {text!r})")
    return value


def _changes(args) -> dict:
    """``{ThingsBoard key: value or None (removed)}`` the options ask for."""
    changes = {}
    if args.mode is not None:
        changes["powerMode"] = None if args.mode == "NONE" else args.mode
    for _, dest, key in TIMER_OPTIONS:
        if getattr(args, dest) is not None:
            changes[key] = getattr(args, dest)
    return changes


def _apply(settings: dict, changes: dict) -> dict:
    out = dict(settings)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _show(ctx, data, text):
    ctx.print(json.dumps(data, separators=(",", ":")) if ctx.json else text)


def _describe(what, name, settings) -> str:
    return fields([(what, name), *((key, settings.get(key)) for key in KEYS)])


async def device(ctx, args):
    """GET /api/device/{id}; with changes, POST /api/device with its deviceData.transportConfiguration."""
    found = await ctx.client.device(args.ref)
    transport = (found.get("deviceData") or {}).get("transportConfiguration") or {"type": "DEFAULT"}
    changes = _changes(args)
    if not changes:
        _show(ctx, transport, _describe("device", found["name"], transport))
        return
    own = _apply({k: v for k, v in transport.items() if k != "type"}, changes)
    body = dict(found)
    body["deviceData"] = {"configuration": {"type": "DEFAULT"},
                          "transportConfiguration": {"type": "COAP", **own} if own else {"type": "DEFAULT"}}
    reply = await ctx.client.call("POST", "/api/device", body=body)
    ctx.show(reply, lambda d: _describe("device", d["name"], d["deviceData"]["transportConfiguration"]))


def _client_settings(found) -> dict:
    transport = (found.get("profileData") or {}).get("transportConfiguration") or {}
    return transport.get("clientSettings") or {}


async def profile(ctx, args):
    """GET /api/deviceProfile/{id}; with changes, POST /api/deviceProfile with its clientSettings."""
    found_id = await profile_id(ctx, args.ref)
    found = (await ctx.client.get(f"/api/deviceProfile/{segment(found_id)}")).data
    changes = _changes(args)
    if not changes:
        settings = _client_settings(found)
        _show(ctx, settings, _describe("profile", found["name"], settings))
        return
    body = dict(found)
    data = dict(body.get("profileData") or {})
    transport = dict(data.get("transportConfiguration") or {})
    if transport.get("type") != "COAP":
        transport = {"type": "COAP"}
    transport["clientSettings"] = _apply(_client_settings(found), changes)
    data["transportConfiguration"] = transport
    body["profileData"], body["transportType"] = data, "COAP"
    reply = await ctx.client.call("POST", "/api/deviceProfile", body=body)
    ctx.show(reply, lambda p: _describe("profile", p["name"], _client_settings(p)))
