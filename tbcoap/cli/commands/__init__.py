"""Command groups of ``tbcoap``: one module per group, loaded by tbcoap.cli.main.

A module here defines ``register(commands)``::

    def register(commands):
        group = commands.group("rpc", "send RPC to devices")
        parser = group.command("send", send, "send a two-way RPC")
        parser.add_argument("device")

    async def send(ctx, args):
        device = await ctx.client.device(args.device)
        reply = await ctx.client.call("POST", "/api/rpc/twoway/...", body={...})
        ctx.show(reply, render)

Raise tbcoap.cli.errors.UsageError for bad arguments found late (exit 2); REST
errors and an unreachable server are reported by the core (exit 1).
"""

import argparse


def key_list(text) -> list:
    """``a,b`` as ``["a", "b"]`` (an argparse type; blanks dropped, none is an error)."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("needs at least one key, as a,b")
    return keys


def count(minimum):
    """An argparse type: an integer of at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


def paging(parser, noun):
    """Add ``--page-size`` and ``--page`` to a listing command."""
    parser.add_argument("--page-size", type=count(1), default=100, metavar="N",
                        help=f"{noun} per page (default 100)")
    parser.add_argument("--page", type=count(0), default=0, metavar="P", help="page number, from 0 (default 0)")
