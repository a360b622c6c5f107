"""tbcoap-webhook: forwards committed telemetry and client-attribute uploads to an HTTP URL as JSON batches.

A rule plugin: enable it with ``--rules echo,webhook`` and give its URL with
``--plugin-option webhook.url=http://...`` or ``[plugins.webhook] url = ...``.
"""

from urllib.parse import urlsplit

import treq
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from tbcoap.hookspecs import hookimpl
from tbcoap_webhook.events import attributes_event, encode, telemetry_event
from tbcoap_webhook.forwarder import Forwarder
from tbcoap_webhook.settings import SETTINGS, parse_header

__version__ = "0.1.0"

log = Logger()

IDLE_STATS = {"queued": 0, "sent": 0, "batches": 0, "retries": 0, "dropped": 0, "failed": 0, "lastError": None}


class WebhookPlugin:
    """The plugin: one instance per node; ``tbcoap_startup`` builds a fresh queue from the settings."""

    name = "webhook"
    __version__ = __version__

    def __init__(self, reactor=None):
        self._reactor = reactor
        self.config = None     # the validated settings, once started
        self.forwarder = None  # the queue and sender, once started
        self._pool = None
        self._headers = None

    @hookimpl
    def tbcoap_plugin_settings(self):
        return list(SETTINGS)

    @hookimpl
    def tbcoap_startup(self, config):
        if self._reactor is None:
            from twisted.internet import reactor
            self._reactor = reactor
        self.config = dict(config)
        self._headers = {b"Content-Type": [b"application/json"],
                         b"User-Agent": [f"tbcoap-webhook/{__version__}".encode()]}
        extra = parse_header(config["header"])
        if extra:
            self._headers[extra[0]] = [extra[1]]
        self._pool = HTTPConnectionPool(self._reactor)
        self._pool.maxPersistentPerHost = 1  # one POST at a time
        self.forwarder = Forwarder(self._post, self._reactor, batch_size=config["batch-size"],
                                   batch_wait=config["batch-wait"], queue_size=config["queue-size"],
                                   retries=config["retries"], backoff=config["backoff"], timeout=config["timeout"])
        log.info("webhook: forwarding uploads to {target} in batches of up to {size}",
                 target=_shown(config["url"]), size=config["batch-size"])

    def _post(self, body):
        """POST one batch; fires with the status code once the answer's body is read."""
        d = treq.post(self.config["url"], data=body, headers=self._headers, pool=self._pool,
                      allow_redirects=False, unbuffered=True, reactor=self._reactor)
        return d.addCallback(lambda response: treq.collect(response, _discard).addCallback(lambda _: response.code))

    @hookimpl
    def tbcoap_telemetry_uploaded(self, device, entries):
        self._add(telemetry_event, device, entries)

    @hookimpl
    def tbcoap_attributes_uploaded(self, device, values):
        self._add(attributes_event, device, values)

    def _add(self, build, device, data):
        """Queue one event; returns nothing, so the device's answer never waits."""
        if self.forwarder is None:
            return
        try:
            encoded = encode(build(device, data))
        except (TypeError, ValueError):
            log.failure("webhook: cannot encode an upload of device {device}", device=device.id)
            self.forwarder.counters["failed"] += 1
            return
        self.forwarder.add(encoded)

    @hookimpl
    def tbcoap_shutdown(self):
        if self.forwarder is None:
            return None
        pool = self._pool
        d = self.forwarder.close(self.config["shutdown-flush"])
        return d.addCallback(lambda _: pool.closeCachedConnections())

    @hookimpl
    def tbcoap_stats(self):
        return self.forwarder.stats() if self.forwarder is not None else dict(IDLE_STATS)


def _discard(data):
    pass


def _shown(url):
    """The URL's scheme, host and port only: its path, query or user part may hold a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


plugin = WebhookPlugin()
