"""Rule plugins: client-side RPC answers and upload notifications, in ``--rules`` order.

A rule is a registered plugin, named in ``--rules``, that implements
``tbcoap_client_rpc`` and/or the upload hooks.  Only enabled rules are asked.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from tbcoap.errors import NoRule, RuleTimeout
from tbcoap.plugins import RULE_HOOKS, call_impl

log = Logger()


def rule_names(plugins):
    """Names of registered plugins that implement a rule hook."""
    return sorted({impl.plugin_name for hook in RULE_HOOKS
                   for impl in getattr(plugins.pm.hook, hook).get_hookimpls()})


class RuleService:
    """Asks the enabled rules, in order, with a timeout."""

    def __init__(self, plugins, names, timeout=10.0, clock=None):
        from twisted.internet import reactor

        self.plugins = plugins
        self.names = list(names)
        self.timeout = timeout
        self.clock = clock or reactor
        self._cache = {}  # hook -> (implementations seen, their list, the enabled ones in order)

    def _impls(self, hook):
        caller = getattr(self.plugins.pm.hook, hook)
        impls = caller.get_hookimpls()
        cached = self._cache.get(hook)
        if cached is not None and cached[0] == len(impls) and all(a is b for a, b in zip(cached[1], impls)):
            return cached[2]
        by_name = {impl.plugin_name: impl for impl in impls}
        chosen = [by_name[name] for name in self.names if name in by_name]
        self._cache[hook] = (len(impls), impls, chosen)
        return chosen

    def client_rpc(self, device, request):
        """Deferred answer (a JSON value) of the first enabled rule that answers.

        NoRule if no enabled rule implements it or none answers; RuleTimeout
        if a rule takes longer than the timeout; a rule's own error otherwise.
        """
        impls = self._impls("tbcoap_client_rpc")
        if not impls:
            return defer.fail(NoRule("no rule answers client-side RPC"))
        return self._ask(impls, device, request)

    @defer.inlineCallbacks
    def _ask(self, impls, device, request):
        for impl in impls:
            d = call_impl(impl, device=device, request=request)
            d.addTimeout(self.timeout, self.clock)
            try:
                answer = yield d
            except defer.TimeoutError:
                raise RuleTimeout(f"rule {impl.plugin_name} did not answer within {self.timeout:g} s") from None
            if answer is not None:
                return answer
        raise NoRule("no enabled rule answered")

    def uploaded(self, hook, device, **kwargs):
        """Tell every enabled rule about an upload; failures are logged, never returned."""
        for impl in self._impls(hook):
            d = call_impl(impl, device=device, **kwargs)
            d.addErrback(lambda f, name=impl.plugin_name: log.failure("rule {rule} failed on {hook}", f,
                                                                      rule=name, hook=hook))
