"""Rule plugins: client-side RPC answers and upload notifications, in ``--rules`` order.

A rule is a registered plugin, named in ``--rules``, that implements
``tbcoap_client_rpc`` and/or the upload hooks.  Only enabled rules are asked.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from tbcoap.errors import NoRule, RuleTimeout
from tbcoap.plugins import PluginTimeout, ask_in_order, call_impl

log = Logger()


class RuleService:
    """Asks the enabled rules, in order, with a timeout."""

    def __init__(self, plugins, names, timeout=10.0, clock=None):
        from twisted.internet import reactor

        self.plugins = plugins
        self.names = tuple(names)
        self.timeout = timeout
        self.clock = clock or reactor

    def client_rpc(self, device, request):
        """Deferred answer (a JSON value) of the first enabled rule that answers.

        NoRule if no enabled rule implements it or none answers; RuleTimeout
        if a rule takes longer than the timeout; a rule's own error otherwise.
        """
        impls = self.plugins.implementations("tbcoap_client_rpc", self.names)
        if not impls:
            return defer.fail(NoRule("no rule answers client-side RPC"))
        d = ask_in_order(impls, {"device": device, "request": request}, self.timeout, self.clock)
        return d.addCallbacks(_answered, _timed_out)

    def uploaded(self, hook, device, **kwargs):
        """Tell every enabled rule about an upload; failures are logged, never returned."""
        for impl in self.plugins.implementations(hook, self.names):
            d = call_impl(impl, device=device, **kwargs)
            d.addErrback(lambda f, name=impl.plugin_name: log.failure("rule {rule} failed on {hook}", f,
                                                                      rule=name, hook=hook))


def _answered(answer):
    if answer is None:
        raise NoRule("no enabled rule answered")
    return answer


def _timed_out(failure):
    failure.trap(PluginTimeout)
    late = failure.value
    raise RuleTimeout(f"rule {late.plugin} did not answer within {late.timeout:g} s")
