"""``LatencyHistogram``: durations counted in Prometheus' buckets, one increment per observation.

Part of the public plugin API: a store keeps one as its ``commit_latency`` (``IStore``) and
observes each commit's duration in it; the message layers keep one per CoAP port.  ``/metrics``
(``tbcoap.metrics``) reads them when it is scraped.
"""

from __future__ import annotations

from bisect import bisect_left

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """Durations in seconds, counted in the buckets of ``BUCKETS`` (Prometheus' ``le`` bounds)."""

    __slots__ = ("counts", "sum", "count")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds):
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def add_to(self, family, labels):
        """Add this histogram's cumulative buckets to a prometheus_client HistogramMetricFamily."""
        running, buckets = 0, []
        for bound, count in zip(BUCKETS, self.counts):
            running += count
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", self.count))
        family.add_metric(labels, buckets, self.sum)
