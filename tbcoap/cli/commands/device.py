"""``tbcoap device``: create, list, show, delete devices; read or rotate their tokens, or give
them an X.509 certificate or a DTLS pre-shared key as credential."""

from __future__ import annotations

from tbcoap.cli.errors import CliError
from tbcoap.cli.client import segment
from tbcoap.cli.commands import paging
from tbcoap.cli.output import fields, iso, page_text

REF = "NAME_OR_ID"
REF_HELP = "the device's id (uuid) or name"


def register(commands):
    """Add ``tbcoap device ...``."""
    group = commands.group("device", "manage devices and their access tokens")
    p = group.command("create", create, "create a device")
    p.add_argument("name")
    p.add_argument("--type", help="its device profile (default: default)")
    p.add_argument("--label")
    p.add_argument("--token", help="its access token (default: a random one)")
    p = group.command("list", list_devices, "list devices, a page at a time")
    paging(p, "devices")
    p.add_argument("--search", metavar="TEXT", help="only devices whose name contains TEXT (any case)")
    p.add_argument("--sort", choices=("createdTime", "name", "type", "label"), default="createdTime",
                   help="order of the list (default createdTime)")
    p.add_argument("--desc", action="store_true", help="newest (or last) first")
    p = group.command("show", show, "show one device")
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p = group.command("delete", delete, "delete a device with its data")
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p = group.command("token", token, "print a device's access token, or set a new one")
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p.add_argument("--set", metavar="NEW", help="replace the token (the old one is refused at once)")
    p = group.command("certificate", certificate,
                      "make an X.509 certificate the device's credential (for CoAPS; the token goes)")
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p.add_argument("pem_file", metavar="PEM_FILE", help="the device's certificate, PEM")
    p = group.command("assign", assign, "give a device to a customer (from whoever owned it)")
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p.add_argument("--customer", required=True, metavar="TITLE_OR_ID", help="the customer's title or id (uuid)")
    p = group.command("unassign", unassign, "free a device (it belongs to no customer any more)")
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p = group.command("psk", psk, "make a DTLS pre-shared key the device's credential (for CoAPS; the token goes)",
                      own_key=True)
    p.add_argument("device", metavar=REF, help=REF_HELP)
    p.add_argument("--identity", required=True, help="the PSK identity the device sends (unique)")
    p.add_argument("--key", dest="psk_key", required=True, metavar="HEX",
                   help="the pre-shared key in hex, 16 to 64 bytes (32 to 128 digits); here --key is not the "
                        "admin key, which goes before the command (tbcoap --key ADMIN device psk ...) or comes "
                        "from $TBCOAP_ADMIN_KEY or --data-dir")


def describe(device, *extra) -> str:
    """A device as ``key: value`` lines (``extra`` pairs last)."""
    customer = device.get("customerId")
    return fields([
        ("name", device.get("name")), ("id", device["id"]["id"]), ("type", device.get("type")),
        ("label", device.get("label")), ("customer", customer["id"] if customer else None),
        ("created", iso(device.get("createdTime"))), *extra])


async def create(ctx, args):
    """POST /api/device (?accessToken=T); readable output adds the token."""
    body = {k: v for k, v in (("name", args.name), ("type", args.type), ("label", args.label)) if v is not None}
    params = {"accessToken": args.token} if args.token else None
    reply = await ctx.client.call("POST", "/api/device", params, body)
    token = args.token
    if not ctx.json:
        creds = await ctx.client.get(f"/api/device/{segment(reply.data['id']['id'])}/credentials")
        token = creds.data.get("credentialsId")
    ctx.show(reply, lambda device: describe(device, ("token", token)))


async def list_devices(ctx, args):
    """GET /api/tenant/devices?pageSize=N&page=P (textSearch, sortProperty, sortOrder)."""
    params = {"pageSize": args.page_size, "page": args.page, "sortProperty": args.sort,
              "sortOrder": "DESC" if args.desc else "ASC"}
    if args.search:
        params["textSearch"] = args.search
    reply = await ctx.client.get("/api/tenant/devices", params)
    ctx.show(reply, lambda page: render_page(page, args.page))


def render_page(page, number) -> str:
    """A page of devices as a table, with where it is in the whole list."""
    rows = [(d.get("name"), d.get("type"), d["id"]["id"], iso(d.get("createdTime"))) for d in page["data"]]
    return page_text(page, number, ("name", "type", "id", "created"), rows, "device", "devices")


async def show(ctx, args):
    """GET /api/device/{id}, or GET /api/tenant/devices?deviceName=NAME."""
    ctx.show(await ctx.client.device_reply(args.device), describe)


async def delete(ctx, args):
    """DELETE /api/device/{id}."""
    device = await ctx.client.device(args.device)
    reply = await ctx.client.call("DELETE", f"/api/device/{segment(device['id']['id'])}")
    ctx.show(reply, lambda _: f"deleted device {device['name']} ({device['id']['id']})")


async def token(ctx, args):
    """GET /api/device/{id}/credentials, or POST /api/device/credentials with --set."""
    device = await ctx.client.device(args.device)
    device_id = device["id"]["id"]
    if args.set is None:
        reply = await ctx.client.get(f"/api/device/{segment(device_id)}/credentials")
        kind = reply.data.get("credentialsType")
        if kind == "X509_CERTIFICATE" and not ctx.json:
            raise CliError(f"device {device['name']} has no access token: it authenticates with an X.509 "
                           f"certificate (digest {reply.data.get('credentialsId')}); --set gives it a token again")
        if kind == "PSK" and not ctx.json:
            raise CliError(f"device {device['name']} has no access token: it authenticates with a pre-shared "
                           f"key (identity {reply.data.get('credentialsId')}); --set gives it a token again")
    else:
        body = {"deviceId": {"entityType": "DEVICE", "id": device_id}, "credentialsType": "ACCESS_TOKEN",
                "credentialsId": args.set}
        reply = await ctx.client.call("POST", "/api/device/credentials", body=body)
    ctx.show(reply, lambda creds: creds.get("credentialsId") or args.set)


async def certificate(ctx, args):
    """POST /api/device/credentials {"credentialsType":"X509_CERTIFICATE","credentialsValue": PEM}."""
    try:
        with open(args.pem_file, encoding="utf-8") as f:
            pem = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.pem_file}: {getattr(exc, 'strerror', None) or exc}") from None
    device = await ctx.client.device(args.device)
    body = {"deviceId": {"entityType": "DEVICE", "id": device["id"]["id"]}, "credentialsType": "X509_CERTIFICATE",
            "credentialsValue": pem}
    reply = await ctx.client.call("POST", "/api/device/credentials", body=body)
    ctx.show(reply, lambda creds: f"device {device['name']} now authenticates with its certificate over CoAPS "
                                  f"(digest {creds.get('credentialsId')}); its access token is gone")


async def assign(ctx, args):
    """POST /api/customer/{customerId}/device/{deviceId}."""
    device = await ctx.client.device(args.device)
    customer_id = await ctx.client.customer_id(args.customer)
    reply = await ctx.client.call("POST", f"/api/customer/{segment(customer_id)}/device/{segment(device['id']['id'])}")
    ctx.show(reply, lambda d: f"device {d['name']} now belongs to customer {args.customer} ({customer_id})")


async def unassign(ctx, args):
    """DELETE /api/customer/device/{deviceId}."""
    device = await ctx.client.device(args.device)
    reply = await ctx.client.call("DELETE", f"/api/customer/device/{segment(device['id']['id'])}")
    ctx.show(reply, lambda d: f"device {d['name']} belongs to no customer now")
async def psk(ctx, args):
    """POST /api/device/credentials {"credentialsType":"PSK","credentialsId": identity,"credentialsValue": key}."""
    device = await ctx.client.device(args.device)
    body = {"deviceId": {"entityType": "DEVICE", "id": device["id"]["id"]}, "credentialsType": "PSK",
            "credentialsId": args.identity, "credentialsValue": args.psk_key}
    reply = await ctx.client.call("POST", "/api/device/credentials", body=body)
    ctx.show(reply, lambda creds: f"device {device['name']} now authenticates with its pre-shared key over CoAPS "
                                  f"(identity {creds.get('credentialsId')}); its access token is gone")
