"""``tbcoap rpc``: send server-side RPCs to devices; read, list and delete persistent ones.

The RPC's own timeout is ``--rpc-timeout MS`` (it is the body's ``timeout``): ``--timeout``
is taken by the global option, the seconds the command waits for the server.  A send that
waits for the device (not ``--persistent``) waits longer than the RPC may live, unless
``--timeout`` is given: the server answers 504 itself when the RPC expires.
"""

from __future__ import annotations

import json
import math
import time

from tbcoap.cli.client import DEFAULT_TIMEOUT, segment
from tbcoap.cli.commands import count, paging
from tbcoap.cli.output import fields, iso, page_text

DEVICE = "DEVICE"
DEVICE_HELP = "the device's id (uuid) or name"
DEFAULT_RPC_TIMEOUT_MS = 10_000   # the server's default (docs/rest-api.md)
MIN_RPC_TIMEOUT_MS = 5_000        # the server raises shorter timeouts to this
MARGIN_S = 5                      # extra seconds to wait beyond the RPC's expiry


def register(commands):
    """Add ``tbcoap rpc ...``."""
    group = commands.group("rpc", "send RPCs to devices; read, list and delete persistent RPCs")
    p = group.command(
        "send", send, "send an RPC to a device and wait for its reply",
        description="Send an RPC to a device observing /api/v1/TOKEN/rpc. Two-way (the default) prints "
                    "the device's reply; --oneway prints 'delivered' once the device has it; --persistent "
                    "answers at once with the RPC's id (read it later with 'rpc status'). An RPC that "
                    "expires first fails with 504. Without --timeout the command waits until the RPC "
                    "expires plus 5 s.")
    p.add_argument("device", metavar=DEVICE, help=DEVICE_HELP)
    p.add_argument("method", metavar="METHOD", help="the RPC's method name")
    p.add_argument("params", nargs="?", type=json_or_string, default={}, metavar="PARAMS",
                   help="its params: JSON if it parses as JSON, else a string (default {})")
    p.add_argument("--oneway", action="store_true", help="a one-way RPC: no reply is expected")
    p.add_argument("--persistent", action="store_true",
                   help="a persistent RPC: print its id at once, it survives a server restart")
    p.add_argument("--rpc-timeout", type=count(1), metavar="MS",
                   help=f"the RPC expires after this many milliseconds (default {DEFAULT_RPC_TIMEOUT_MS}; "
                        f"the server raises less than {MIN_RPC_TIMEOUT_MS} to that)")
    p.add_argument("--expiration-time", type=count(0), metavar="MS",
                   help="the RPC expires at this time, in milliseconds since the epoch (wins over --rpc-timeout)")
    p = group.command("status", status, "show one persistent RPC: its request, status and response")
    p.add_argument("rpc_id", metavar="RPC_ID", help="the id 'rpc send --persistent' printed")
    p = group.command("list", list_rpcs, "list a device's RPCs, newest first, a page at a time")
    p.add_argument("device", metavar=DEVICE, help=DEVICE_HELP)
    paging(p, "RPCs")
    p = group.command("delete", delete, "delete an RPC (a caller still waiting for it gets 404)")
    p.add_argument("rpc_id", metavar="RPC_ID", help="the RPC's id")


def json_or_string(text):
    """An argparse type: ``text`` as JSON if it parses (finite numbers only), else the string itself."""
    try:
        value = json.loads(text, parse_constant=_reject)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def _reject(name):
    raise ValueError(name)


def request_body(args) -> dict:
    """The REST body of ``rpc send``."""
    body = {"method": args.method, "params": args.params}
    if args.rpc_timeout is not None:
        body["timeout"] = args.rpc_timeout
    if args.expiration_time is not None:
        body["expirationTime"] = args.expiration_time
    if args.persistent:
        body["persistent"] = True
    return body


def rpc_lifetime(args, now_ms=None) -> float:
    """Seconds the RPC may live on the server, as the server computes its expiry."""
    if args.expiration_time is not None:
        now_ms = time.time() * 1000 if now_ms is None else now_ms
        return max(0.0, (args.expiration_time - now_ms) / 1000)
    timeout = args.rpc_timeout if args.rpc_timeout is not None else DEFAULT_RPC_TIMEOUT_MS
    return max(timeout, MIN_RPC_TIMEOUT_MS) / 1000


def http_timeout(args, default, now_ms=None) -> float:
    """The seconds ``rpc send`` waits for the server: ``--timeout`` if given (differs from the
    default), else the default or, when longer, the RPC's lifetime plus a margin."""
    if args.timeout != default or args.persistent:
        return args.timeout
    return max(default, rpc_lifetime(args, now_ms) + MARGIN_S)


def pretty(value) -> str:
    """A JSON value indented for people."""
    return json.dumps(value, indent=2, ensure_ascii=False)


async def send(ctx, args):
    """POST /api/rpc/{oneway,twoway}/{deviceId}."""
    device = await ctx.client.device(args.device)
    ctx.client.timeout = http_timeout(args, DEFAULT_TIMEOUT)
    kind = "oneway" if args.oneway else "twoway"
    reply = await ctx.client.call("POST", f"/api/rpc/{kind}/{segment(device['id']['id'])}", body=request_body(args))
    if args.persistent:
        ctx.show(reply, lambda data: data.get("rpcId") if isinstance(data, dict) else pretty(data))
    elif args.oneway:
        ctx.show(reply, lambda _: "delivered")
    else:
        ctx.show(reply, pretty)


def describe(rpc) -> str:
    """A persistent RPC as ``key: value`` lines."""
    request = rpc.get("request") or {}
    oneway = request.get("oneway")
    return fields([
        ("id", (rpc.get("id") or {}).get("id")),
        ("device", (rpc.get("deviceId") or {}).get("id")),
        ("request id", request.get("id")),
        ("method", request.get("method")),
        ("params", request.get("params")),
        ("kind", None if oneway is None else "one-way" if oneway else "two-way"),
        ("status", rpc.get("status")),
        ("response", rpc.get("response")),
        ("created", iso(rpc.get("createdTime"))),
        ("expiration", iso(rpc.get("expirationTime"))),
    ])


async def status(ctx, args):
    """GET /api/rpc/persistent/{rpcId}."""
    ctx.show(await ctx.client.get(f"/api/rpc/persistent/{segment(args.rpc_id)}"), describe)


async def list_rpcs(ctx, args):
    """GET /api/rpc/persistent/device/{deviceId}?pageSize=N&page=P."""
    device = await ctx.client.device(args.device)
    reply = await ctx.client.get(f"/api/rpc/persistent/device/{segment(device['id']['id'])}",
                                 {"pageSize": args.page_size, "page": args.page})
    ctx.show(reply, lambda page: render_page(page, args.page))


def render_page(page, number) -> str:
    """A page of RPCs as a table, with where it is in the whole list."""
    rows = []
    for rpc in page.get("data", []):
        request = rpc.get("request") or {}
        rows.append(((rpc.get("id") or {}).get("id"), request.get("id"), request.get("method"), rpc.get("status"),
                     iso(rpc.get("createdTime")), iso(rpc.get("expirationTime"))))
    return page_text(page, number, ("id", "request", "method", "status", "created", "expiration"), rows,
                     "RPC", "RPCs")


async def delete(ctx, args):
    """DELETE /api/rpc/persistent/{rpcId}."""
    reply = await ctx.client.call("DELETE", f"/api/rpc/persistent/{segment(args.rpc_id)}")
    ctx.show(reply, lambda _: f"deleted rpc {args.rpc_id}")


__all__ = ["register", "json_or_string", "request_body", "http_timeout", "rpc_lifetime"]
