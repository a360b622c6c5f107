"""``tbcoap attributes``: read, set and delete a device's attributes."""

from __future__ import annotations

import argparse
import json
import math

from tbcoap.cli.client import segment
from tbcoap.cli.commands import key_list
from tbcoap.cli.errors import UsageError
from tbcoap.cli.output import iso, table

SCOPES = ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE")
WRITABLE = ("SHARED_SCOPE", "SERVER_SCOPE")
DEVICE_HELP = "the device's id (uuid) or name"


def register(commands):
    """Add ``tbcoap attributes ...``."""
    group = commands.group("attributes", "read and change devices' attributes")
    p = group.command("get", get, "attribute values (of every scope unless --scope)")
    p.add_argument("device", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--scope", type=scope(SCOPES), metavar="SCOPE", help=f"one of {', '.join(SCOPES)}")
    p.add_argument("--keys", type=key_list, metavar="a,b", help="only these keys (default: every key)")
    p = group.command("set", set_attributes, "set shared or server attributes", trailing="pairs",
                      description="Set attributes: KEY=VALUE pairs (VALUE is JSON if it parses as JSON, "
                                  "else a string: n=5 and b=true are typed, s=abc and s='\"true\"' are strings; "
                                  "like ThingsBoard, the server stores numeric strings as numbers), and/or "
                                  "--json-body '{\"k\": v}' (pairs win over the body).")
    p.add_argument("device", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--scope", type=scope(WRITABLE), metavar="SCOPE", required=True, help=" or ".join(WRITABLE))
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--json-body", type=json_object, metavar="JSON", help="a JSON object of attributes")
    p = group.command("delete", delete, "delete attributes")
    p.add_argument("device", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--scope", type=scope(SCOPES), metavar="SCOPE", required=True, help=f"one of {', '.join(SCOPES)}")
    p.add_argument("--keys", type=key_list, metavar="a,b", required=True, help="the keys to delete")


def scope(allowed):
    """An argparse type: a scope, also as ``shared``, ``server``, ``client`` in any case."""
    def parse(text):
        name = text.upper()
        name = name if name.endswith("_SCOPE") else name + "_SCOPE"
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return name
    return parse


def pair(text):
    """``KEY=VALUE`` as ``(key, value)``, the value JSON if it parses (UsageError if no ``=``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw, parse_constant=_reject)
    except ValueError:
        return key, raw
    if isinstance(value, float) and not math.isfinite(value):
        return key, raw
    return key, value


def _reject(name):
    raise ValueError(name)


def json_object(text):
    """An argparse type: a JSON object."""
    try:
        value = json.loads(text, parse_constant=_reject)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def base(device) -> str:
    """The device's attribute path prefix."""
    return f"/api/plugins/telemetry/DEVICE/{segment(device['id']['id'])}"


def render(attributes, scope_name=None) -> str:
    """``[{"key","value","lastUpdateTs"}]`` as a table (with SCOPE when given per row)."""
    if not attributes:
        return "no attributes"
    with_scope = any("scope" in a for a in attributes)
    headers = (("scope",) if with_scope else ()) + ("key", "value", "updated")
    rows = [((a["scope"],) if with_scope else ()) + (a["key"], a["value"], iso(a.get("lastUpdateTs")))
            for a in attributes]
    return table(headers, rows)


async def get(ctx, args):
    """GET .../values/attributes[/SCOPE]?keys=; readable output without --scope shows each scope."""
    device = await ctx.client.device(args.device)
    params = {"keys": ",".join(args.keys)} if args.keys else None
    if args.scope or ctx.json:
        suffix = f"/{args.scope}" if args.scope else ""
        ctx.show(await ctx.client.get(f"{base(device)}/values/attributes{suffix}", params), render)
        return
    found = []
    for one in SCOPES:
        reply = await ctx.client.get(f"{base(device)}/values/attributes/{one}", params)
        found += [dict(a, scope=one) for a in reply.data]
    ctx.print(render(found))


async def set_attributes(ctx, args):
    """POST .../DEVICE/{id}/{SCOPE} with the attributes as a JSON object."""
    body = dict(args.json_body or {})
    body.update(pair(text) for text in args.pairs)
    if not body:
        raise UsageError("nothing to set: give KEY=VALUE pairs or --json-body")
    device = await ctx.client.device(args.device)
    reply = await ctx.client.call("POST", f"{base(device)}/{args.scope}", body=body)
    ctx.show(reply, lambda _: f"set {args.scope} of {device['name']}: {', '.join(body)}")


async def delete(ctx, args):
    """DELETE .../DEVICE/{id}/{SCOPE}?keys=."""
    device = await ctx.client.device(args.device)
    reply = await ctx.client.call("DELETE", f"{base(device)}/{args.scope}", {"keys": ",".join(args.keys)})
    ctx.show(reply, lambda _: f"deleted from {args.scope} of {device['name']}: {', '.join(args.keys)}")
