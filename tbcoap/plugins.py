"""The plugin manager: loads plugins and calls their hooks.

Plugins come from the ``tbcoap`` entry-point group (the bundled sqlite store
included) and from ``register``.  Built-in behaviour (token auth) is itself
a plugin, marked ``trylast`` so that outside plugins are asked first.
"""

from __future__ import annotations

import importlib.metadata

import pluggy
from twisted.internet import defer

import tbcoap
from tbcoap import builtins, hookspecs

ENTRY_POINT_GROUP = "tbcoap"


class PluginManager:
    """pluggy's manager plus Deferred-aware calls and a description of each plugin."""

    def __init__(self, load_entry_points=True):
        self.pm = pluggy.PluginManager("tbcoap")
        self.pm.add_hookspecs(hookspecs)
        self._sources = {}
        self.register(builtins, name="tbcoap.builtins", source="builtin", version=tbcoap.__version__)
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name):
                continue
            plugin = ep.load()
            dist = ep.dist
            self.register(
                plugin,
                name=ep.name,
                source="entrypoint",
                version=dist.version if dist else None,
                distribution=dist.metadata["Name"] if dist else None,
            )

    def register(self, plugin, name=None, source="code", version=None, distribution=None):
        """Register a plugin object or module; returns its name."""
        name = self.pm.register(plugin, name=name)
        self._sources[name] = {
            "source": source,
            "version": version or getattr(plugin, "__version__", None),
            "distribution": distribution,
        }
        return name

    def unregister(self, name):
        """Remove a plugin registered under ``name``."""
        self.pm.unregister(name=name)
        self._sources.pop(name, None)

    def describe(self):
        """``[{"name","version","source","hooks"}]`` for every registered plugin."""
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin()):
            info = self._sources.get(name, {})
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())
            source = info.get("source", "code")
            if info.get("distribution"):
                source = f"{source}:{info['distribution']}"
            out.append({"name": name, "version": info.get("version"), "source": source, "hooks": hooks})
        return out

    def call_all(self, hook_name, **kwargs):
        """Call every implementation synchronously; the list of non-None results."""
        return getattr(self.pm.hook, hook_name)(**kwargs)

    def call_first(self, hook_name, **kwargs):
        """Deferred firing with the first non-None answer, asking implementations in order.

        Each answer (value or Deferred) is resolved before the next plugin is
        asked, so a plugin may say "not mine" asynchronously.  A failing plugin
        fails the Deferred.
        """
        impls = list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))
        return _ask_in_order(impls, kwargs)

    def store_backends(self):
        """``{scheme: StoreBackend}`` from every plugin."""
        backends = {}
        for result in self.call_all("tbcoap_store_backends"):
            for backend in result if isinstance(result, (list, tuple)) else [result]:
                backends.setdefault(backend.scheme, backend)
        return backends


def call_impl(impl, **kwargs):
    """Call one hook implementation with the arguments it declares; always a Deferred."""
    return defer.maybeDeferred(impl.function, *[kwargs[name] for name in impl.argnames])


@defer.inlineCallbacks
def _ask_in_order(impls, kwargs):
    for impl in impls:
        answer = yield call_impl(impl, **kwargs)
        if answer is not None:
            return answer
    return None
