"""``tbcoap claim``: a customer claims a device with the secret the device sent; or releases it.

Claiming is done with the customer's key (``tbcoap --key CUSTOMER_KEY claim DEVICE --secret S``):
the device is given to the calling customer. The device must first have asked to be claimed
(CoAP ``POST /api/v1/TOKEN/claim {"secretKey","durationMs"}``). The server answers
SUCCESS, FAILURE (wrong secret, no request or an expired one; a wrong secret also removes the
device's request) or CLAIMED (the device already has a customer). ``--release`` frees the
device again (the admin key, or the owning customer's).
"""

from __future__ import annotations

import json

from tbcoap.cli.client import segment
from tbcoap.cli.errors import ApiError, CliError

REFUSALS = ("FAILURE", "CLAIMED")
DESCRIPTION = """Claim a device for the customer whose key is given with --key, using the secret the
device sent with its claim request (CoAP POST /api/v1/TOKEN/claim). Prints 'claimed DEVICE for
customer ID'. The server may refuse: FAILURE (wrong secret, no claim request or an expired one; a
wrong secret also removes the device's request, so the device must ask again) or CLAIMED (the device
already has a customer): then 'tbcoap: claim failed: FAILURE' (or CLAIMED) goes to stderr and the exit
code is 1 (with --json the server's answer is printed too). With --release the device is freed
instead (the admin key, or the key of the customer that owns it; another customer gets 403)."""


def register(commands):
    """Add ``tbcoap claim DEVICE_NAME (--secret S | --release)``: a command of its own, no group."""
    p = commands.command("claim", claim, "claim a device for a customer (customer key), or release it",
                         description=DESCRIPTION)
    p.add_argument("device_name", metavar="DEVICE_NAME", help="the device's name")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--secret", metavar="S", help="the secret the device sent with its claim request ('' for none)")
    how.add_argument("--release", action="store_true",
                     help="free the device instead (admin key, or the owning customer's key)")


def path(device_name) -> str:
    return f"/api/customer/device/{segment(device_name)}/claim"


async def claim(ctx, args):
    """POST /api/customer/device/{deviceName}/claim {"secretKey"}, or DELETE it with --release."""
    if args.release:
        reply = await ctx.client.call("DELETE", path(args.device_name))
        ctx.show(reply, lambda device: f"released {device.get('name', args.device_name)}: it has no customer now")
        return
    try:
        reply = await ctx.client.call("POST", path(args.device_name), body={"secretKey": args.secret})
    except ApiError as error:
        result = error.data if error.status == 400 and isinstance(error.data, str) else None
        if result not in REFUSALS:
            raise
        if ctx.json:
            ctx.print(json.dumps(error.data, separators=(",", ":")))
        raise CliError(f"claim failed: {result}") from None
    ctx.show(reply, lambda data: claimed_text(data, args.device_name))


def claimed_text(data, device_name) -> str:
    """``claimed DEVICE for customer ID`` from the SUCCESS answer."""
    device = (data or {}).get("device") or {}
    customer = (device.get("customerId") or {}).get("id", "-")
    return f"claimed {device.get('name', device_name)} for customer {customer}"
