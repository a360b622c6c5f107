"""Connections to Redis on txredisapi: plain, TLS or through Sentinel, with a bound on every call.

One connection carries every command of a store (Redis answers in order, so commands sent
without waiting share round trips, and WAIT covers every write before it); a second one is
subscribed for the bus.  Both reconnect by themselves with backoff.  A call that gets no answer
within the URL's ``timeout`` (also while reconnecting) fails with StoreUnavailable.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer, ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger

from tbcoap.errors import StoreUnavailable

log = Logger()
UNAVAILABLE_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "BUSY", "NOREPLICAS", "CLUSTERDOWN",
                       "NOAUTH", "WRONGPASS")


class SentinelMasterEndpoint:
    """Connects to whichever server Sentinel names as the service's primary, asking every time."""

    def __init__(self, reactor, sentinel, service, timeout):
        self.reactor, self.sentinel, self.service, self.timeout = reactor, sentinel, service, timeout

    def connect(self, factory):
        d = self.sentinel.discover_master(self.service)
        return d.addCallback(lambda address: HostnameEndpoint(self.reactor, *address, timeout=self.timeout)
                             .connect(factory))


def server_endpoint(reactor, url):
    """The endpoint of a plain or TLS server URL."""
    host, port = url.hosts[0]
    endpoint = HostnameEndpoint(reactor, host, port, timeout=url.timeout)
    if url.tls:
        trust = ssl.Certificate.loadPEM(open(url.ca, "rb").read()) if url.ca else None
        endpoint = wrapClientTLS(ssl.optionsForClientTLS(host, trustRoot=trust), endpoint)
    return endpoint


class Redis:
    """The store's connections: ``call(command, *args)`` and ``evalsha``, bounded by the timeout."""

    def __init__(self, url, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url, self.reactor = url, reactor
        self.sentinel = None
        self.handler = None

    def connect(self):
        """Start connecting (and reconnecting); fires once the first connection is up."""
        url = self.url
        options = dict(password=url.password, replyTimeout=url.timeout, convertNumbers=False, username=url.username)
        if url.service:
            sentinel_options = {"password": url.password} if url.password else {}
            self.sentinel = txredisapi.Sentinel(list(url.hosts), **sentinel_options)
            self.sentinel.discovery_timeout = url.timeout
            self.handler = self.sentinel.master_for(url.service, dbid=url.db, poolsize=1, **options)
        else:
            factory = txredisapi.RedisFactory(None, url.db, 1, isLazy=True, **options)
            factory.startConnecting(server_endpoint(self.reactor, url))
            self.handler = factory.handler
        return self.call("PING")

    def subscriber_endpoint(self):
        """Where the bus's subscriber connection goes (the primary, through Sentinel if any)."""
        if self.sentinel is not None:
            return SentinelMasterEndpoint(self.reactor, self.sentinel, self.url.service, self.url.timeout)
        return server_endpoint(self.reactor, self.url)

    def call(self, command, *args):
        """Deferred reply of one command; StoreUnavailable if Redis cannot answer in time."""
        if self.handler is None:
            return defer.fail(StoreUnavailable("redis store is not open"))
        d = self.handler.execute_command(command, *args)
        return self._bounded(d)

    def _bounded(self, d):
        d.addTimeout(self.url.timeout, self.reactor,
                     onTimeoutCancel=lambda result, timeout: _unavailable(
                         f"redis did not answer within {timeout:g} s"))
        return d.addErrback(_translate)

    def close(self):
        """Stop reconnecting and close the connections."""
        closing = []
        if self.handler is not None:
            closing.append(defer.maybeDeferred(self.handler.disconnect))
        if self.sentinel is not None:
            closing.append(self.sentinel.disconnect())
        return defer.DeferredList(closing, consumeErrors=True)


def _unavailable(message):
    raise StoreUnavailable(message)


def _translate(failure):
    """txredisapi's connection errors and Redis's "cannot now" replies as StoreUnavailable."""
    if failure.check(StoreUnavailable, defer.CancelledError):
        if failure.check(defer.CancelledError):
            raise StoreUnavailable("redis call canceled")
        return failure
    if failure.check(txredisapi.ConnectionError, ConnectionError, txredisapi.TimeoutError):
        raise StoreUnavailable(f"redis unreachable: {failure.getErrorMessage()}")
    if failure.check(txredisapi.ResponseError):
        text = failure.getErrorMessage()
        if text.split(" ", 1)[0].upper() in UNAVAILABLE_REPLIES:
            raise StoreUnavailable(f"redis: {text}")
    return failure
