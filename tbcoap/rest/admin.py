"""REST calls about the node itself: stats, plugins, health."""

from __future__ import annotations

from twisted.internet import defer


@defer.inlineCallbacks
def stats(call):
    """GET /api/admin/stats: counters of every layer, and the RPCs queued in the store."""
    out = call.node.stats()
    counts = yield call.core.rpc.counts()
    out["rpc"]["queuedRpcs"] = counts["QUEUED"]
    out["rpc"]["inFlightRpcs"] = counts["SENT"] + counts["DELIVERED"]
    return out


def plugins(call):
    """GET /api/admin/plugins: every registered plugin, bundled ones included."""
    return call.node.plugins.describe()


@defer.inlineCallbacks
def health(call):
    """GET /api/health (no key): 200 UP, or 503 with what is down."""
    down = {}
    if call.node.coap_port is None or not call.node.coap_port.connected:
        down["coap"] = "not listening"
    if not call.core.ready:
        down["store"] = f"{call.node.store.name} store not open"
    else:
        try:
            yield call.node.store.check()
        except Exception as exc:
            down["store"] = f"{call.node.store.name}: {exc}"
    if down:
        call.request.setResponseCode(503)
        return {"status": "DOWN", "down": sorted(down), "details": down}
    return {"status": "UP"}
