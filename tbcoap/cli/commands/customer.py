"""``tbcoap customer``: create and list customers, list the devices a customer owns.

A customer's API key is shown once, by ``customer create``: the server keeps only its
digest. Give it to the customer, who claims devices with ``tbcoap --key KEY claim ...``.
"""

from __future__ import annotations

from tbcoap.cli.client import segment
from tbcoap.cli.commands import paging
from tbcoap.cli.commands import device as device_commands
from tbcoap.cli.output import fields, iso, page_text

KEY_NOTE = ("note: the API key is shown only this once (the server keeps no copy); store it now.\n"
            "The customer claims with it as: tbcoap --key=KEY claim DEVICE_NAME --secret S")


def register(commands):
    """Add ``tbcoap customer ...``."""
    group = commands.group("customer", "manage customers (the owners of claimed devices)")
    p = group.command("create", create, "create a customer and print its API key (shown once)")
    p.add_argument("title", metavar="TITLE", help="the customer's title")
    p = group.command("list", list_customers, "list customers, a page at a time")
    paging(p, "customers")
    p = group.command("devices", devices, "list the devices a customer owns (admin key, or that customer's key)")
    p.add_argument("customer", metavar="TITLE_OR_ID", help="the customer's title or id (uuid)")
    paging(p, "devices")
    p = group.command("delete", delete, "delete a customer: its devices become free, its key is refused at once")
    p.add_argument("customer", metavar="TITLE_OR_ID", help="the customer's title or id (uuid)")


def describe(customer) -> str:
    """A new customer as ``key: value`` lines, its key and the note that it is shown once."""
    lines = fields([("title", customer.get("title")), ("id", (customer.get("id") or {}).get("id")),
                    ("created", iso(customer.get("createdTime"))), ("api key", customer.get("apiKey"))])
    return f"{lines}\n{KEY_NOTE}"


async def create(ctx, args):
    """POST /api/customer {"title"}."""
    reply = await ctx.client.call("POST", "/api/customer", body={"title": args.title})
    ctx.show(reply, describe)


async def list_customers(ctx, args):
    """GET /api/customers?pageSize=N&page=P."""
    reply = await ctx.client.get("/api/customers", {"pageSize": args.page_size, "page": args.page})

    def render(page):
        rows = [(c.get("title"), (c.get("id") or {}).get("id"), iso(c.get("createdTime")))
                for c in page.get("data", [])]
        return page_text(page, args.page, ("title", "id", "created"), rows, "customer", "customers")

    ctx.show(reply, render)


async def devices(ctx, args):
    """GET /api/customer/{customerId}/devices?pageSize=N&page=P."""
    customer_id = await ctx.client.customer_id(args.customer)
    reply = await ctx.client.get(f"/api/customer/{segment(customer_id)}/devices",
                                 {"pageSize": args.page_size, "page": args.page})
    ctx.show(reply, lambda page: device_commands.render_page(page, args.page))


async def delete(ctx, args):
    """DELETE /api/customer/{customerId}."""
    customer_id = await ctx.client.customer_id(args.customer)
    reply = await ctx.client.call("DELETE", f"/api/customer/{segment(customer_id)}")
    ctx.show(reply, lambda _: f"deleted customer {args.customer} ({customer_id}); its devices are free")
