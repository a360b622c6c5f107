"""``tbcoap telemetry``: a device's latest values and its history."""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from tbcoap.cli.client import segment
from tbcoap.cli.commands import count, key_list
from tbcoap.cli.errors import UsageError
from tbcoap.cli.output import iso, table

DAY_MS = 24 * 3600 * 1000
TIME_HELP = "milliseconds since the epoch, or ISO 8601 (2024-05-01T12:00:00Z; UTC unless an offset is given)"


def register(commands):
    """Add ``tbcoap telemetry ...``."""
    group = commands.group("telemetry", "read devices' time series")
    p = group.command("latest", latest, "the latest value of each key")
    p.add_argument("device", metavar="DEVICE", help="the device's id (uuid) or name")
    p.add_argument("--keys", type=key_list, metavar="a,b", help="only these keys (default: every key)")
    p = group.command("history", history, "values in a time range, newest first unless --asc",
                      description="Values of the given keys in [--start, --end], at most --limit per key. "
                                  "Default range: the last 24 hours up to now.")
    p.add_argument("device", metavar="DEVICE", help="the device's id (uuid) or name")
    p.add_argument("--keys", type=key_list, metavar="a,b", required=True, help="the keys to read")
    p.add_argument("--start", type=when, metavar="TIME", help=f"from (default: --end minus 24 h); {TIME_HELP}")
    p.add_argument("--end", type=when, metavar="TIME", help=f"until (default: now); {TIME_HELP}")
    p.add_argument("--limit", type=count(1), default=100, metavar="N", help="at most N values per key (default 100)")
    p.add_argument("--asc", action="store_true", help="oldest first")


def when(text) -> int:
    """An argparse type: milliseconds since the epoch from ms or ISO 8601 text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not milliseconds nor ISO 8601: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def path(device) -> str:
    """The device's latest/history path."""
    return f"/api/plugins/telemetry/DEVICE/{segment(device['id']['id'])}/values/timeseries"


def render(series, limit=None) -> str:
    """``{key: [{"ts","value"}]}`` as a KEY, TIME, VALUE table."""
    rows = [(key, iso(p.get("ts")), p.get("value")) for key, points in series.items() for p in points]
    if not rows:
        return "no values"
    out = table(("key", "time", "value"), rows)
    full = [key for key, points in series.items() if limit and len(points) >= limit]
    if full:
        out += f"\n(--limit {limit} reached for {', '.join(full)}: older or newer values may exist)"
    return out


async def latest(ctx, args):
    """GET .../values/timeseries?keys=."""
    device = await ctx.client.device(args.device)
    params = {"keys": ",".join(args.keys)} if args.keys else None
    ctx.show(await ctx.client.get(path(device), params), render)


async def history(ctx, args):
    """GET .../values/timeseries?keys=&startTs=&endTs=&limit=&orderBy=."""
    end = args.end if args.end is not None else int(time.time() * 1000)
    start = args.start if args.start is not None else end - DAY_MS
    if start > end:
        raise UsageError(f"--start ({iso(start)}) is after --end ({iso(end)})")
    device = await ctx.client.device(args.device)
    params = {"keys": ",".join(args.keys), "startTs": start, "endTs": end, "limit": args.limit,
              "orderBy": "ASC" if args.asc else "DESC"}
    ctx.show(await ctx.client.get(path(device), params), lambda series: render(series, args.limit))
