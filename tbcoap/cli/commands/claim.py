"""``tbcoap claim``: a customer claims a device with the secret the device sent; or releases it.

Claiming is done with the customer's key (``tbcoap --key CUSTOMER_KEY claim DEVICE --secret S``):
the device is given to the calling customer. The device must first have asked to be claimed
(CoAP ``POST /api/v1/TOKEN/claim {"secretKey","durationMs"}``). The server answers
SUCCESS, FAILURE (wrong secret, no request or an expired one; a wrong secret also removes the
device's request) or CLAIMED (the device already has a customer). ``--release`` frees the
device again (the admin key, or the owning customer's).

The server's refusal is ``400 {"response": "FAILURE"}``, a body without the usual
``status``/``message``; ``Client.call`` keeps only the status of such an answer, so the claim
is sent with ``raw_call``, which returns the status and body of every answer.
"""

from __future__ import annotations

import json

from twisted.internet import defer

from tbcoap.cli.client import Reply, segment
from tbcoap.cli.errors import ApiError, CliError, Unreachable

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
    add = getattr(commands, "command", None)
    if add is None:
        # tbcoap.cli.main.Commands offers groups only: add the top-level command the way
        # Group.command adds a subcommand, on the top-level subparsers.
        from tbcoap.cli.main import Group

        add = Group(commands._subparsers, commands._common).command
    p = add("claim", claim, "claim a device for a customer (customer key), or release it", description=DESCRIPTION)
    p.add_argument("device_name", metavar="DEVICE_NAME", help="the device's name")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--secret", metavar="S", help="the secret the device sent with its claim request ('' for none)")
    how.add_argument("--release", action="store_true",
                     help="free the device instead (admin key, or the owning customer's key)")


def path(device_name) -> str:
    return f"/api/customer/device/{segment(device_name)}/claim"


async def raw_call(client, method, call_path, body=None):
    """Like ``client.call`` but an error status is returned, not raised: ``(status, Reply)``.

    Uses the client's transport (``_exchange``) so that connection errors and the timeout
    are reported exactly as for every other command.
    """
    answer = defer.ensureDeferred(client._exchange(method, call_path, None, body))
    answer.addTimeout(client.timeout, client._reactor)
    try:
        response, text = await answer
    except defer.TimeoutError:
        raise Unreachable(f"no answer from {client.url} within {client.timeout:g} s") from None
    return response, Reply(parse(text), text)


def parse(text):
    """The JSON value of an answer's text (None when empty, the text itself if not JSON)."""
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return text


def api_error(response, data) -> ApiError:
    """The ApiError ``Client.call`` raises for this error answer."""
    if isinstance(data, dict) and "message" in data:
        return ApiError(data.get("status", response.code), data["message"])
    return ApiError(response.code, response.phrase.decode("latin-1", "replace"))


def refusal(response, data):
    """FAILURE or CLAIMED when the answer is the claim's refusal, else None."""
    if response.code == 400 and isinstance(data, dict) and data.get("response") in REFUSALS:
        return data["response"]
    return None


async def claim(ctx, args):
    """POST /api/customer/device/{deviceName}/claim {"secretKey"}, or DELETE it with --release."""
    if args.release:
        reply = await ctx.client.call("DELETE", path(args.device_name))
        ctx.show(reply, lambda device: f"released {device.get('name', args.device_name)}: it has no customer now")
        return
    response, reply = await raw_call(ctx.client, "POST", path(args.device_name), {"secretKey": args.secret})
    result = refusal(response, reply.data)
    if result is not None:
        if ctx.json and reply.text:
            ctx.print(reply.text)
        raise CliError(f"claim failed: {result}")
    if response.code >= 400:
        raise api_error(response, reply.data)
    ctx.show(reply, lambda data: claimed_text(data, args.device_name))


def claimed_text(data, device_name) -> str:
    """``claimed DEVICE for customer ID`` from the SUCCESS answer."""
    device = (data or {}).get("device") or {}
    customer = (device.get("customerId") or {}).get("id", "-")
    return f"claimed {device.get('name', device_name)} for customer {customer}"
