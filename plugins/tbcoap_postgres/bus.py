"""PostgresBus: change events between the nodes that share one database, over LISTEN/NOTIFY.

An event reaches this node's subscribers at once; then a ``pg_notify`` goes out through the
store's writer (so a node's events leave in the order they were published, each after the commit
of the change it reports).  Every other node's listening connection, in a thread of its own,
receives it and hands it to the reactor.  A payload over NOTIFY's 8,000 bytes is kept in the
table ``bus_events`` and the notification carries its id; the receivers read it from there, and
events are delivered in the order they arrived either way.  NOTIFY is only a wake-up: everything
the events point at is in the tables.  When the listening connection comes back after a loss,
the bus delivers ``Resync``, so the node looks at the store again for what it may have missed.
"""

from __future__ import annotations

import collections
import threading
import time

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tbcoap.errors import StoreUnavailable
from tbcoap.events import LocalBus, Resync, from_json, to_json
from tbcoap.interfaces import IBus
from tbcoap.models import new_id, now_ms

from .connection import connect

log = Logger()
MAX_PAYLOAD = 7900  # bytes: NOTIFY takes less than 8,000
KEEP_EVENTS_MS = 10 * 60 * 1000  # large events kept this long for the nodes to read them
PING_EVERY = 5.0  # seconds of silence after which the listening connection is tested
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0


@implementer(IBus)
class PostgresBus(LocalBus):
    """A LocalBus whose events also travel through PostgreSQL to the other nodes."""

    def __init__(self, store):
        super().__init__()
        self.store = store
        self.url = store.url
        self.reactor = store.reactor
        self.channel = f"{self.url.schema}.events"
        self.node = new_id()  # this node's notifications come back too: they are skipped
        self._thread = None
        self._stop = threading.Event()
        self._ready = None
        self._closed = None
        self._inbox = collections.deque()  # (kind, data) in arrival order: ("event", text) or ("ref", id)
        self._reading = False
        self.counters = {"published": 0, "received": 0, "publishFailures": 0, "resyncs": 0, "large": 0}

    # -- in the reactor ----------------------------------------------------------------------

    def start(self):
        """Connect and LISTEN; fires once listening (or fails after the store's timeout)."""
        self._ready = defer.Deferred()
        self._thread = threading.Thread(target=self._listen, name="tbcoap-postgres-listen", daemon=True)
        self._thread.start()
        timeout = self.url.timeout
        return self._ready.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda *_: _fail(
            f"postgresql at {self.url.address}: not listening within {timeout:g} s"))

    def publish(self, event):
        """Deliver ``event`` here now, and to every other node after the writes before it."""
        super().publish(event)
        text = to_json(event)
        d = self.store.run_write(lambda conn: _notify(conn, self.channel, self.node, text))
        d.addCallbacks(self._published, self._publish_failed)

    def _published(self, large):
        self.counters["published"] += 1
        self.counters["large"] += bool(large)

    def _publish_failed(self, failure):
        # the change is in the tables already; other nodes find it at their next Resync or read
        self.counters["publishFailures"] += 1
        log.warn("postgresql bus could not publish: {error}", error=failure.getErrorMessage())

    def _listening(self, again):
        if self._ready is not None and not self._ready.called:
            self._ready.callback(None)
        elif again:  # a reconnection: what was notified meanwhile is lost
            self.counters["resyncs"] += 1
            log.info("postgresql bus listening again: the node looks at the store again")
            self._inbox.append(("resync", None))
            self._drain()

    def _arrived(self, payloads):
        for payload in payloads:
            node, _, text = payload.partition(" ")
            if node == self.node:
                continue
            if text.startswith("@"):
                self._inbox.append(("ref", text[1:]))
            else:
                self._inbox.append(("event", text))
        self._drain()

    def _drain(self):
        """Deliver what arrived, in order; a large event is read from its table first."""
        while self._inbox and not self._reading:
            kind, data = self._inbox.popleft()
            if kind == "resync":
                LocalBus.publish(self, Resync())
            elif kind == "event":
                self._deliver(data)
            else:
                self._reading = True
                d = self.store.run_read(_large_event, data)
                d.addCallbacks(self._deliver, self._large_lost)
                d.addBoth(self._read_done)

    def _read_done(self, _):
        self._reading = False
        self._drain()

    def _large_lost(self, failure):
        log.warn("postgresql bus: a large event could not be read ({error}); the node looks at the store again",
                 error=failure.getErrorMessage())
        LocalBus.publish(self, Resync())

    def _deliver(self, text):
        if text is None:  # the large event was removed already: look at the store instead
            LocalBus.publish(self, Resync())
            return
        try:
            event = from_json(text)
        except (ValueError, KeyError, TypeError):
            log.warn("postgresql bus: a notification that is no event was ignored")
            return
        self.counters["received"] += 1
        LocalBus.publish(self, event)

    def close(self):
        """Stop listening (once: a second call waits for the first)."""
        if self._closed is None:
            self._stop.set()
            thread = self._thread
            self._closed = defer.succeed(None) if thread is None else threads.deferToThread(thread.join)
        done = defer.Deferred()
        self._closed.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    # -- in the listening thread ----------------------------------------------------------------

    def _listen(self):
        again = False
        pause = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                conn = connect(self.url, autocommit=True)
            except StoreUnavailable as exc:
                if not again and self._ready is not None:
                    self.reactor.callFromThread(self._not_ready, exc)
                    return
                log.warn("postgresql bus cannot listen: {error}", error=exc)
                self._stop.wait(pause)
                pause = min(pause * 2, BACKOFF_MAX)
                continue
            pause = BACKOFF_FIRST
            try:
                conn.execute(f'LISTEN "{self.channel}"')
                self.reactor.callFromThread(self._listening, again)
                again = True
                self._receive(conn)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warn("postgresql bus lost its connection: {error}", error=exc)
            finally:
                conn.close()

    def _not_ready(self, exc):
        if self._ready is not None and not self._ready.called:
            self._ready.errback(Failure(exc))

    def _receive(self, conn):
        """Hand notifications to the reactor until stopped or the connection fails."""
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            payloads = [n.payload for n in conn.notifies(timeout=0.5, stop_after=500)]
            if payloads:
                quiet_since = time.monotonic()
                self.reactor.callFromThread(self._arrived, payloads)
            elif time.monotonic() - quiet_since > PING_EVERY:
                conn.execute("SELECT 1")  # a server that went away is noticed here
                quiet_since = time.monotonic()


def _notify(conn, channel, node, text):
    """A writer job: the notification ``node event-json``, or for a large event its row and a
    notification ``node @id``."""
    payload = f"{node} {text}"
    if len(payload.encode("utf-8")) <= MAX_PAYLOAD:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
        return False
    now = now_ms()
    (event_id,) = conn.execute("INSERT INTO bus_events (created, payload) VALUES (%s, %s) RETURNING id",
                               (now, text)).fetchone()
    conn.execute("DELETE FROM bus_events WHERE id IN (SELECT id FROM bus_events WHERE created < %s ORDER BY id"
                 " LIMIT 100)", (now - KEEP_EVENTS_MS,))
    conn.execute("SELECT pg_notify(%s, %s)", (channel, f"{node} @{event_id}"))
    return True


def _large_event(conn, event_id):
    row = conn.execute("SELECT payload FROM bus_events WHERE id = %s", (int(event_id),)).fetchone()
    return None if row is None else row[0]


def _fail(message):
    raise StoreUnavailable(message)
