"""REST calls about the node itself: stats, plugins, health, metrics, backup."""

from __future__ import annotations

import time

from prometheus_client.exposition import choose_encoder
from twisted.internet import defer

from tbcoap.rest.answers import FileDownload, Raw


@defer.inlineCallbacks
def stats(call):
    """GET /api/admin/stats: counters of every layer, and the RPCs queued in the store."""
    out = call.node.stats()
    counts = yield call.core.rpc.counts()
    out["rpc"]["queuedRpcs"] = counts["QUEUED"]
    out["rpc"]["inFlightRpcs"] = counts["SENT"] + counts["DELIVERED"]
    return out


def metrics(call):
    """GET /metrics (admin key or --metrics-key): Prometheus' text format, or OpenMetrics when the
    scraper's Accept header asks for it."""
    accept = call.request.getHeader(b"accept")
    encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else None)
    return Raw(content_type.encode("ascii"), encoder(call.node.metrics))


@defer.inlineCallbacks
def backup(call):
    """GET /api/admin/backup: a consistent snapshot of the store as a file download, taken while the
    node serves (one at a time; 501 from a store that has backups of its own)."""
    snapshot = yield call.node.take_backup()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return FileDownload(snapshot.path, snapshot.content_type.encode("ascii"),
                        f"tbcoap-{stamp}.{snapshot.suffix}", snapshot.release)


def plugins(call):
    """GET /api/admin/plugins: every registered plugin, bundled ones included."""
    return call.node.plugins.describe()


@defer.inlineCallbacks
def health(call):
    """GET /api/health (no key): 200 UP, or 503 with what is down."""
    down = yield call.node.health()
    if down:
        call.request.setResponseCode(503)
        return {"status": "DOWN", "down": sorted(down), "details": down}
    return {"status": "UP"}
