"""The REST API's routes: a method, a path pattern in ThingsBoard's spelling, a handler and the
roles that may call it."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Route:
    """One REST call: method, path pattern, handler and the roles allowed to call it (none: no key)."""

    method: str
    pattern: re.Pattern
    handler: object
    roles: tuple = ("admin",)


def route(method, path, handler, roles=("admin",)):
    """A Route from a path like ``/api/device/{id}`` (each ``{name}`` is one segment)."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(method, re.compile(f"^{regex}$"), handler, roles)


def find(routes, method, path):
    """``(route, match, path known)``: the route for ``method`` and ``path`` (None if there is none
    for this method), its match, and whether any route has this path at all (404 or 405)."""
    matches = [(r, m) for r in routes if (m := r.pattern.match(path))]
    for the_route, match in matches:
        if the_route.method == method:
            return the_route, match, True
    return None, None, bool(matches)
