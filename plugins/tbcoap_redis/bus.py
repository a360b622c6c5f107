"""RedisBus: change events between the nodes that share one Redis, over pub/sub.

An event reaches this node's subscribers at once, then goes out with PUBLISH on one channel
(``<prefix>:events``); every other node's subscriber connection receives it, in the order Redis
took them, and delivers it locally.  Pub/sub is only a wake-up: everything the events point at
lives in Redis.  When the subscriber connection comes back after a loss, the bus delivers a
``Resync`` event, so the node looks at the store again for what it may have missed.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tbcoap.errors import StoreUnavailable
from tbcoap.events import LocalBus, Resync, from_json, to_json
from tbcoap.interfaces import IBus
from tbcoap.models import new_id

from .connection import CannotConnect, ReportsLoss, ReportsRefusal

log = Logger()


class _Subscriber(ReportsLoss, txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.bus.received(message)


class _SubscriberFactory(ReportsRefusal, txredisapi.RedisFactory):
    """One subscribed connection (a Link keeps it up); each (re)connection subscribes again."""

    protocol = _Subscriber

    def __init__(self, bus, url):
        super().__init__(None, None, 1, password=url.password, username=url.username, convertNumbers=False)
        self.bus = bus

    def addConnection(self, conn):
        super().addConnection(conn)
        if conn.connected:
            conn.subscribe(self.bus.channel).addCallbacks(self.bus.subscribed, self.bus.subscribe_failed)


@implementer(IBus)
class RedisBus(LocalBus):
    """A LocalBus whose events also travel through Redis to the other nodes."""

    def __init__(self, redis, channel, reactor):
        super().__init__()
        self.redis, self.channel, self.reactor = redis, channel, reactor
        self.node = new_id()  # this node's events come back from Redis too: they are skipped
        self.link = None
        self._ready = None
        self._subscriptions = 0
        self._closed = None
        self.counters = {"published": 0, "received": 0, "publishFailures": 0, "resyncs": 0}

    def start(self):
        """Connect the subscriber; fires once subscribed (or fails after the store's timeout)."""
        self._ready = defer.Deferred()
        self.link = self.redis.link_for(_SubscriberFactory(self, self.redis.url), "redis bus")
        self.link.start().addErrback(self._not_connected)
        timeout = self.redis.url.timeout
        return self._ready.addTimeout(timeout, self.reactor,
                                      onTimeoutCancel=lambda *_: _fail(f"no redis subscription within {timeout:g} s"))

    def _not_connected(self, failure):
        if not self._ready.called:
            self._ready.errback(StoreUnavailable(failure.getErrorMessage()) if failure.check(CannotConnect)
                                else failure)

    def subscribed(self, _):
        self._subscriptions += 1
        if self._ready is not None and not self._ready.called:
            self._ready.callback(None)
        elif self._subscriptions > 1:  # a reconnection: what was published meanwhile is lost
            self.counters["resyncs"] += 1
            log.info("redis bus subscribed again: the node looks at the store again")
            LocalBus.publish(self, Resync())

    def subscribe_failed(self, failure):
        log.failure("redis bus could not subscribe", failure)

    def publish(self, event):
        """Deliver ``event`` here now and to every other node through Redis."""
        super().publish(event)
        message = f"{self.node} {to_json(event)}"
        d = self.redis.call("PUBLISH", self.channel, message)
        d.addCallbacks(self._published, self._publish_failed)

    def _published(self, _):
        self.counters["published"] += 1

    def _publish_failed(self, failure):
        # the change is in Redis already; other nodes find it at their next Resync or read
        self.counters["publishFailures"] += 1
        log.warn("redis bus could not publish: {error}", error=failure.getErrorMessage())

    def received(self, message):
        node, _, text = message.partition(" ")
        if node == self.node:
            return
        try:
            event = from_json(text)
        except (ValueError, KeyError, TypeError):
            log.warn("redis bus: a message that is no event was ignored")
            return
        self.counters["received"] += 1
        LocalBus.publish(self, event)

    def close(self):
        """Disconnect the subscriber (once: a second call waits for the first)."""
        if self._closed is None:
            self._closed = self.link.stop() if self.link else defer.succeed(None)
        done = defer.Deferred()
        self._closed.addBoth(lambda result: (done.callback(None), result)[1])
        return done


def _fail(message):
    raise StoreUnavailable(message)
