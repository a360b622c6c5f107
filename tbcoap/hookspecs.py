"""The hooks a tbcoap plugin may implement (pluggy project name ``tbcoap``).

A plugin is a module or object with functions decorated ``@hookimpl``,
registered through the ``tbcoap`` entry-point group or in code.  The hooks
called while a node serves (authenticate, client_rpc, the upload hooks,
startup, shutdown) may return a plain value or a Deferred; store_backends,
plugin_settings and stats are asked synchronously and return their answer.
docs/plugins.md documents each one; tests/test_hookspecs.py fails when a hook
lacks docs or a test named ``test_hook_<name>``.
"""

from dataclasses import dataclass
from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("tbcoap")
hookimpl = pluggy.HookimplMarker("tbcoap")


@dataclass(frozen=True)
class StoreBackend:
    """What ``tbcoap_store_backends`` returns: a store chosen by URL scheme.

    ``factory(url, settings)`` builds an unopened IStore; ``settings`` is the
    service's option mapping (``data-dir``, ..., and ``plugins``: each plugin's
    validated settings by name).  It raises ValueError for a URL it cannot use.
    """

    scheme: str
    factory: Callable
    description: str = ""


@dataclass(frozen=True)
class Setting:
    """One setting a plugin takes, declared by ``tbcoap_plugin_settings``.

    Given as ``--plugin-option NAME.KEY=VALUE`` or in the config file's
    ``[plugins.NAME]`` table.  ``type`` is ``str``, ``int``, ``float`` or
    ``bool``; ``check(value)`` may raise ValueError with a message for a value
    of the right type that is still wrong (tbcoap puts the plugin and key in
    front of it).  A ``required`` setting without a value stops the start, but
    only when the plugin is active.  A ``secret`` value is never repeated in an
    error message.
    """

    key: str
    type: type = str
    default: object = None
    help: str = ""
    required: bool = False
    check: Callable | None = None
    secret: bool = False


SHUTDOWN_TIMEOUT = 10.0
"""Seconds tbcoap waits for the plugins' ``tbcoap_shutdown`` Deferreds before it goes on."""


@hookspec
def tbcoap_store_backends():
    """Return a StoreBackend (or a list of them) this plugin offers."""


@hookspec
def tbcoap_authenticate(token, store):
    """Return the Device an access token belongs to, or None for "not mine"; called in order until one answers."""


@hookspec
def tbcoap_client_rpc(device, request):
    """Answer a device's client-side RPC ``request`` (a JSON object) with a JSON value, or None for "not mine"."""


@hookspec
def tbcoap_telemetry_uploaded(device, entries):
    """See a device's committed telemetry: ``entries`` is a list of ``(ts, key, value)``; the result is ignored."""


@hookspec
def tbcoap_attributes_uploaded(device, values):
    """See a device's committed client attributes ``{key: value}``; the result is ignored."""


@hookspec
def tbcoap_plugin_settings():
    """Return the list of Setting this plugin takes (its ``[plugins.NAME]`` keys)."""


@hookspec
def tbcoap_startup(config):
    """The node has started with this plugin active: ``config`` is its validated ``{key: value}``."""


@hookspec
def tbcoap_shutdown():
    """The node is stopping: finish or hand off pending work (a Deferred is waited for, up to 10 s)."""


@hookspec
def tbcoap_stats():
    """Return a dict of this plugin's counters, shown under ``plugins.NAME`` in /api/admin/stats."""
