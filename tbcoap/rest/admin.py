"""REST calls about the node itself: stats, plugins, health."""

from __future__ import annotations

import os
import time

from prometheus_client.exposition import choose_encoder
from twisted.internet import defer

from tbcoap import datadir
from tbcoap.errors import StoreUnavailable
from tbcoap.rest.app import FileDownload, Raw


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
    node serves (the store writes it into the data directory first; it is removed once sent).  One
    at a time; 501 from a store that has backups of its own."""
    node = call.node
    if node.backup_running:
        raise StoreUnavailable("a backup is being taken already; try again when it is done")
    node.backup_running = True
    path = datadir.backup_path(node.settings["data-dir"])

    def done():
        node.backup_running = False
        _remove(path)

    try:
        yield node.store.backup(path)
    except BaseException:
        done()
        raise
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    media_type, suffix = node.store.backup_type
    return FileDownload(path, media_type.encode("ascii"), f"tbcoap-{stamp}.{suffix}", done)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
