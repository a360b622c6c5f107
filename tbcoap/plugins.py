"""The plugin manager: loads plugins, knows which ones this node uses, and calls their hooks.

Plugins come from the ``tbcoap`` entry-point group (the bundled sqlite store
and echo rule included) and from ``register``.  Built-in behaviour (token
auth) is itself a plugin, marked ``trylast`` so that outside plugins are
asked first.  A plugin is *active* when this node uses it: the store of
``--store``, the rules of ``--rules``, every auth plugin, and every plugin
that has none of those roles (it only has settings, lifecycle or stats).
"""

from __future__ import annotations

import importlib.metadata

import pluggy
from twisted.internet import defer
from twisted.logger import Logger

import tbcoap
from tbcoap import builtins, hookspecs
from tbcoap.hookspecs import SHUTDOWN_TIMEOUT
from tbcoap.pluginconfig import SettingError, validate

log = Logger()

ENTRY_POINT_GROUP = "tbcoap"
BUILTIN = "tbcoap.builtins"
STORE_HOOK = "tbcoap_store_backends"
AUTH_HOOK = "tbcoap_authenticate"
RULE_HOOKS = ("tbcoap_client_rpc", "tbcoap_telemetry_uploaded", "tbcoap_attributes_uploaded")


class PluginManager:
    """pluggy's manager plus Deferred-aware calls, per-plugin settings and a description of each plugin."""

    def __init__(self, load_entry_points=True):
        self.pm = pluggy.PluginManager("tbcoap")
        self.pm.add_hookspecs(hookspecs)
        self._sources = {}
        self._active = None  # names of the plugins this node uses, once configured
        self._config = {}    # name -> validated {key: value}
        self._chosen = {}    # (hook, names) -> implementations, until a plugin comes or goes
        self.register(builtins, name=BUILTIN, source="builtin", version=tbcoap.__version__)
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name):
                continue
            plugin = ep.load()
            dist = ep.dist
            self.register(plugin, name=ep.name, source="entrypoint", version=dist.version if dist else None,
                          distribution=dist.metadata["Name"] if dist else None)

    def register(self, plugin, name=None, source="code", version=None, distribution=None):
        """Register a plugin object or module; returns its name.

        A plugin registered in code under the name of an installed one takes its place.
        """
        if name is not None and source == "code" and self.pm.has_plugin(name):
            self.unregister(name)
        name = self.pm.register(plugin, name=name)
        self._chosen.clear()
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
        self._chosen.clear()

    def names(self):
        """Names of every registered plugin, sorted."""
        return sorted(name for name, _ in self.pm.list_name_plugin())

    def hooks_of(self, name):
        """The hook names a plugin implements."""
        return {caller.name for caller in self.pm.get_hookcallers(self.pm.get_plugin(name)) or ()}

    def rule_plugins(self):
        """Names of the registered plugins that implement a rule hook (the names ``--rules`` takes)."""
        return sorted({impl.plugin_name for hook in RULE_HOOKS for impl in self._impls(hook)})

    # -- which plugins this node uses --------------------------------------------

    def configure(self, store_scheme, rules, given):
        """Decide which plugins are active and validate every plugin's settings.

        ``given`` is ``{plugin: {key: Given}}`` (tbcoap.pluginconfig.collect);
        raises SettingError naming the plugin and the key.
        """
        unknown = sorted(set(given) - set(self.names()))
        if unknown:
            first = next(iter(given[unknown[0]].values()))
            raise SettingError(f"{first.origin}: no installed plugin is named {unknown[0]!r} "
                               f"(installed: {', '.join(self.names())})")
        store_plugins = {name for name, backend in self._schemes() if backend.scheme == store_scheme}
        active = set()
        for name in self.names():
            hooks = self.hooks_of(name)
            roles = []
            if STORE_HOOK in hooks:
                roles.append(name in store_plugins)
            if hooks.intersection(RULE_HOOKS):
                roles.append(name in rules)
            if AUTH_HOOK in hooks:
                roles.append(True)
            if any(roles) or not roles:
                active.add(name)
        config = {}
        for impl in self._impls("tbcoap_plugin_settings"):
            name = impl.plugin_name
            declared = impl.function() or []
            config[name] = validate(name, declared, given.get(name, {}), name in active)
        for name, values in sorted(given.items()):
            if name not in config and values:
                raise SettingError(f"{next(iter(values.values())).origin}: plugin {name} takes no settings")
        self._active, self._config = active, config

    def is_active(self, name):
        """True if this node uses the plugin (False before ``configure``)."""
        return self._active is not None and name in self._active

    def in_use(self, role_hooks):
        """Active plugins implementing any of ``role_hooks``, sorted by name."""
        return [name for name in self.names() if self.is_active(name) and self.hooks_of(name) & set(role_hooks)]

    def config_for(self, name):
        """The plugin's validated settings (``{}`` if it declares none)."""
        return dict(self._config.get(name, {}))

    def describe(self):
        """``[{"name","version","source","hooks","active"}]`` for every registered plugin."""
        out = []
        for name in self.names():
            info = self._sources.get(name, {})
            source = info.get("source", "code")
            if info.get("distribution"):
                source = f"{source}:{info['distribution']}"
            out.append({"name": name, "version": info.get("version"), "source": source,
                        "hooks": sorted(self.hooks_of(name)), "active": self.is_active(name)})
        return out

    # -- calling hooks -------------------------------------------------------------

    def _impls(self, hook_name):
        """The implementations of a hook in pluggy's calling order."""
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def implementations(self, hook_name, names=None):
        """The implementations of a hook in pluggy's calling order, or (``names``, a tuple) those of
        the plugins named, in that order; kept until a plugin is registered or removed."""
        key = (hook_name, names)
        chosen = self._chosen.get(key)
        if chosen is None:
            impls = self._impls(hook_name)
            if names is not None:
                by_name = {impl.plugin_name: impl for impl in impls}
                impls = [by_name[name] for name in names if name in by_name]
            chosen = self._chosen[key] = tuple(impls)
        return chosen

    def call_first(self, hook_name, **kwargs):
        """Deferred firing with the first non-None answer, asking implementations in order."""
        return ask_in_order(self.implementations(hook_name), kwargs)

    def _schemes(self):
        """``(plugin name, scheme)`` of every offered store, in calling order."""
        for impl in self._impls(STORE_HOOK):
            result = impl.function()
            for backend in result if isinstance(result, (list, tuple)) else [result]:
                if backend is not None:
                    yield impl.plugin_name, backend

    def store_backends(self):
        """``{scheme: StoreBackend}`` from every plugin (the first one offering a scheme wins)."""
        backends = {}
        for _, backend in self._schemes():
            backends.setdefault(backend.scheme, backend)
        return backends

    @defer.inlineCallbacks
    def startup(self):
        """Call ``tbcoap_startup(config)`` of every active plugin, in calling order; a failure
        fails the Deferred with a message naming the plugin."""
        for impl in self._impls("tbcoap_startup"):
            if not self.is_active(impl.plugin_name):
                continue
            try:
                yield call_impl(impl, config=self.config_for(impl.plugin_name))
            except Exception as exc:
                raise RuntimeError(f"plugin {impl.plugin_name} failed to start: {exc}") from exc

    @defer.inlineCallbacks
    def shutdown(self, clock=None, timeout=SHUTDOWN_TIMEOUT):
        """Call ``tbcoap_shutdown()`` of every active plugin at once; wait up to ``timeout`` seconds.

        Failures and plugins that take longer are logged; the stop goes on.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        calls = []
        for impl in self._impls("tbcoap_shutdown"):
            if self.is_active(impl.plugin_name):
                d = call_impl(impl).addTimeout(timeout, clock)
                d.addErrback(lambda f, name=impl.plugin_name: log.failure("plugin {name} failed to shut down", f,
                                                                          name=name))
                calls.append(d)
        yield defer.DeferredList(calls)

    def stats(self):
        """``{name: {counters}}`` from ``tbcoap_stats`` of every active plugin."""
        out = {}
        for impl in self._impls("tbcoap_stats"):
            if not self.is_active(impl.plugin_name):
                continue
            try:
                counters = impl.function()
            except Exception:
                log.failure("plugin {name} failed to give its stats", name=impl.plugin_name)
                counters = {"error": "stats failed (see the log)"}
            out[impl.plugin_name] = counters if isinstance(counters, dict) else {"value": counters}
        return out


def call_impl(impl, **kwargs):
    """Call one hook implementation with the arguments it declares; always a Deferred."""
    return defer.maybeDeferred(impl.function, *[kwargs[name] for name in impl.argnames])


class PluginTimeout(Exception):
    """A plugin did not answer within the time it was given; ``plugin`` is its name."""

    def __init__(self, plugin, timeout):
        super().__init__(f"plugin {plugin} did not answer within {timeout:g} s")
        self.plugin = plugin
        self.timeout = timeout


@defer.inlineCallbacks
def ask_in_order(impls, kwargs, timeout=None, clock=None):
    """The first non-None answer of ``impls`` asked in order, each answer (a value or a Deferred)
    resolved before the next plugin is asked, so a plugin may say "not mine" later; None if none
    answers.  With ``timeout`` (seconds, on ``clock``) a plugin that takes longer fails the call
    with PluginTimeout; a failing plugin fails it with its own error."""
    for impl in impls:
        d = call_impl(impl, **kwargs)
        if timeout is not None:
            d.addTimeout(timeout, clock)
        try:
            answer = yield d
        except defer.TimeoutError:
            raise PluginTimeout(impl.plugin_name, timeout) from None
        if answer is not None:
            return answer
    return None
