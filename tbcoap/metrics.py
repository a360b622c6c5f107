"""Prometheus metrics of a node (``GET /metrics``), exposed by prometheus_client.

The counters the node keeps anyway (message layers, rate limiters, DTLS, RPC, telemetry, the
store's queue) are read when Prometheus scrapes, by a custom collector: recording them costs the
hot path nothing more. The two latency histograms (request: receipt to answer; store: one commit)
are ``tbcoap.latency.LatencyHistogram`` objects, a bucket increment per observation: each
message layer holds one, and each store its ``commit_latency`` (``IStore``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

import tbcoap
from tbcoap.coap.codec import code_text
from tbcoap.coap.dtls import COUNTERS as DTLS_COUNTERS
from tbcoap.latency import LatencyHistogram  # noqa: F401  (at home in tbcoap.latency; still importable here)


def registry_for(node) -> CollectorRegistry:
    """A registry of this node's metrics and its process's (memory, CPU)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)
    return registry


def _counter(name, doc, labels=()):
    return CounterMetricFamily(name, doc, labels=list(labels))


class NodeCollector:
    """Reads the node's counters at scrape time."""

    def __init__(self, node):
        self.node = node

    def collect(self):
        node = self.node
        yield InfoMetricFamily("tbcoap", "tbcoap's version and the store this node uses",
                               value={"version": tbcoap.__version__, "store": node.store.name})
        yield from self._coap(node)
        yield from self._domain(node)
        yield from self._store(node)
        yield from self._ota(node)
        if node.dtls is not None:
            yield from self._dtls(node.dtls.stats())

    def _coap(self, node):
        requests = _counter("tbcoap_coap_requests", "CoAP requests answered, by port and response code",
                            ("port", "code"))
        malformed = _counter("tbcoap_coap_malformed_datagrams", "datagrams that were no CoAP message", ("port",))
        duplicates = _counter("tbcoap_coap_duplicates", "duplicate requests (answered from the cache)", ("port",))
        notifications = _counter("tbcoap_coap_notifications", "observe notifications sent", ("port",))
        latency = HistogramMetricFamily("tbcoap_coap_request_duration_seconds",
                                        "time from a request's receipt to its answer", labels=["port"])
        observations = GaugeMetricFamily("tbcoap_coap_observations", "open observe relations, by port", labels=["port"])
        for port, layer in (("coap", node.coap), ("coaps", node.coaps)):
            if layer is None:
                continue
            counters = layer.counters
            for code, count in counters.items():
                if isinstance(code, int):
                    requests.add_metric([port, code_text(code)], count)
            malformed.add_metric([port], counters["malformed"])
            duplicates.add_metric([port], counters["duplicates"])
            notifications.add_metric([port], counters["notifications"])
            observations.add_metric([port], len(layer.observations))
            if layer.latency is not None:
                layer.latency.add_to(latency, [port])
        yield from (requests, malformed, duplicates, notifications, latency, observations)
        refused = _counter("tbcoap_rate_limit_refusals", "requests refused by a rate limit (4.29)", ("limit",))
        api = node.device_api
        for name, limiter in api.limiters().items():
            refused.add_metric([name], limiter.refused)
        yield refused

    def _domain(self, node):
        core = node.core
        kinds = node.observers.stats()
        observations = GaugeMetricFamily("tbcoap_observations", "open observations by kind", labels=["kind"])
        observations.add_metric(["attributes"], kinds["attributeObservations"])
        observations.add_metric(["rpc"], kinds["rpcObservations"])
        yield observations
        points = _counter("tbcoap_telemetry_points", "telemetry points stored (devices and operators)")
        points.add_metric([], core.telemetry.points_stored)
        yield points
        expired = _counter("tbcoap_telemetry_points_expired", "telemetry points deleted by retention")
        expired.add_metric([], core.retention.expired if core.retention is not None else 0)
        yield expired
        statuses = _counter("tbcoap_rpc_status_changes", "server-side RPCs that entered each status on this node",
                            ("status",))
        for status, count in sorted(core.rpc.status_changes.items()):
            statuses.add_metric([status], count)
        yield statuses
        waiting = GaugeMetricFamily("tbcoap_rpc_waiting_callers", "REST callers waiting for an RPC's outcome")
        waiting.add_metric([], core.rpc.stats()["waitingCallers"])
        yield waiting
        active = GaugeMetricFamily("tbcoap_active_devices",
                                   "devices active on this node (a request within their inactivity timeout)")
        active.add_metric([], core.activity.tracked())
        yield active
        power = core.power.stats()
        sleeping = GaugeMetricFamily("tbcoap_sleepy_devices", "devices observing here in PSM or E_DRX, and those "
                                     "with downlinks held for their next uplink", labels=["state"])
        sleeping.add_metric(["observing"], power["sleepyDevices"])
        sleeping.add_metric(["waiting"], power["devicesWaiting"])
        yield sleeping

    def _ota(self, node):
        devices = GaugeMetricFamily("tbcoap_ota_devices", "devices that get a firmware or software package, by "
                                    "package type and the state they reported (NONE: none yet)", labels=["type", "state"])
        for (ota_type, state), count in sorted(node.core.ota.state_counts().items()):
            devices.add_metric([ota_type, state], count)
        yield devices

    def _store(self, node):
        stats = node.store.stats()
        depth = GaugeMetricFamily("tbcoap_store_queue_depth", "store writes waiting to be committed")
        depth.add_metric([], stats["queueDepth"])
        yield depth
        family = HistogramMetricFamily("tbcoap_store_commit_duration_seconds",
                                       "time one store commit (a batch of writes) took", labels=["store"])
        node.store.commit_latency.add_to(family, [node.store.name])
        yield family

    def _dtls(self, stats):
        """Every key of the ``dtls`` stats under the same name: ``tbcoap_dtls_<key in snake case>``;
        ``ended.<reason>`` and ``pskFailures.<reason>`` are one family each with a ``reason`` label."""
        for key, doc in (("sessions", "DTLS sessions established"),
                         ("handshaking", "DTLS handshakes in progress")):
            gauge = GaugeMetricFamily(f"tbcoap_dtls_{_snake(key)}", doc)
            gauge.add_metric([], stats[key])
            yield gauge
        families = {}
        for key in DTLS_COUNTERS:
            name, _, reason = key.partition(".")
            family = families.get(name)
            if family is None:
                family = families[name] = _counter(f"tbcoap_dtls_{_snake(name)}", DTLS_HELP.get(name, name),
                                                   ("reason",) if reason else ())
            family.add_metric([reason] if reason else [], stats.get(key, 0))
        yield from families.values()


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


DTLS_HELP = {
    "handshakes": "DTLS handshakes completed",
    "failedHandshakes": "DTLS handshakes that failed or timed out",
    "helloVerifyRequests": "ClientHellos answered with a cookie challenge",
    "cookieRejections": "ClientHellos with a cookie that was not made for their address",
    "retransmissions": "DTLS handshake flights sent again",
    "evicted": "DTLS sessions ended to make room for new ones",
    "evictedHandshakes": "DTLS handshakes dropped to make room for new ones",
    "refusedPeerSessions": "DTLS handshakes refused: too many sessions of one source address",
    "refusedHandshakesAddress": "ClientHellos dropped by the handshake rate limit of their source address",
    "refusedHandshakesAll": "ClientHellos dropped by the node-wide handshake rate limit",
    "restarts": "DTLS sessions replaced by a new handshake from the same address",
    "pskFailures": "PSK handshakes refused, by reason",
    "dropped": "datagrams on the CoAPS port that belonged to no session or handshake",
    "rejectedRecords": "DTLS records of a session that did not authenticate or were replayed",
    "rateLimited": "datagrams of a DTLS session past its allowance",
    "renegotiationsRefused": "DTLS renegotiations refused",
    "unsentNoSession": "CoAPS answers dropped: their session had ended",
    "ended": "DTLS sessions ended, by reason",
}
