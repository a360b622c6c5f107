"""``tbcoap plugins``: the plugins the server has loaded, and which of them it uses."""

from __future__ import annotations

from tbcoap.cli.output import table


def register(commands):
    """Add ``tbcoap plugins``."""
    commands.command("plugins", list_plugins, "list the server's plugins and which of them it uses")


async def list_plugins(ctx, args):
    """GET /api/admin/plugins."""
    reply = await ctx.client.get("/api/admin/plugins")

    def render(plugins):
        rows = [(p["name"], p.get("version"), "yes" if p.get("active") else "no", p.get("source"),
                 ", ".join(h.removeprefix("tbcoap_") for h in p.get("hooks", ()))) for p in plugins]
        return table(("name", "version", "active", "source", "hooks"), rows)

    ctx.show(reply, render)
