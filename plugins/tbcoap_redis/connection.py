"""Connections to Redis on txredisapi: plain, TLS or through Sentinel, with a bound on every call.

One connection carries every command of a store (Redis answers in order, so commands sent
without waiting share round trips, and WAIT covers every write before it); a second one is
subscribed for the bus.  Each is a ``Link``: txredisapi's factory and protocol, connected here
rather than by txredisapi's reconnecting service (which logs every attempt and keeps no cause).
The first attempt is the only one: it fails with its cause in one line (connection refused,
authentication, no such database, TLS, Sentinel), so a store that cannot open says why at once.
After that a lost connection is made again with backoff, logged once when lost, once with the
first reason it cannot come back, and once when it is back.  A call that gets no answer within
the URL's ``timeout`` (also while reconnecting) fails with StoreUnavailable.
"""

from __future__ import annotations

import time

import txredisapi
from OpenSSL import SSL
from twisted.internet import defer, error, ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from tbcoap.errors import StoreUnavailable

log = Logger()
UNAVAILABLE_REPLIES = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "BUSY", "NOREPLICAS", "CLUSTERDOWN",
                       "NOAUTH", "WRONGPASS")


class CannotConnect(Exception):
    """A connection attempt failed; the message names the cause in one line."""


class ReportsLoss:
    """Protocol mixin: keeps why its connection ended (``loss``, a Failure)."""

    loss = None

    def connectionLost(self, why):
        self.loss = why
        super().connectionLost(why)


class ReportsRefusal:
    """Factory mixin: keeps what Redis refused while a connection was being readied (AUTH or
    SELECT; txredisapi then drops the connection) as ``refusal``, instead of logging it."""

    refusal = None

    def connectionError(self, why):
        self.refusal = why


class _CommandProtocol(ReportsLoss, txredisapi.RedisProtocol):
    pass


class _Commands(ReportsRefusal, txredisapi.RedisFactory):
    protocol = _CommandProtocol


class _PrimaryProtocol(ReportsLoss, txredisapi.SentinelRedisProtocol):
    """txredisapi's protocol that drops a server that is not a primary (Sentinel's answer was stale)."""


class _PrimaryCommands(ReportsRefusal, txredisapi.SentinelConnectionFactory):
    """Commands to the primary Sentinel names."""

    protocol = _PrimaryProtocol


def command_factory(url):
    """The txredisapi factory of a store's command connection (authenticates, selects the database)."""
    options = dict(uuid=None, dbid=url.db, poolsize=1, password=url.password, username=url.username,
                   replyTimeout=url.timeout, convertNumbers=False)
    if url.service:
        return _PrimaryCommands(sentinel_manager=None, service_name=url.service, is_master=True, **options)
    return _Commands(**options)


def _show(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerEndpoint:
    """Where a redis:// or rediss:// URL connects (``where``: host:port, for messages; ``timeout``:
    how long an attempt may take)."""

    kind = "Redis"

    def __init__(self, reactor, url):
        host, port = url.hosts[0]
        self.where, self.timeout = _show(host, port), url.timeout
        endpoint = HostnameEndpoint(reactor, host, port, timeout=url.timeout)
        if url.tls:
            trust = None
            if url.ca:
                with open(url.ca, "rb") as ca:
                    trust = ssl.Certificate.loadPEM(ca.read())
            endpoint = wrapClientTLS(ssl.optionsForClientTLS(host, trustRoot=trust), endpoint)
        self._endpoint = endpoint

    def connect(self, factory):
        return self._endpoint.connect(factory)


class SentinelMasterEndpoint:
    """Connects to whichever server Sentinel names as the service's primary, asking every time."""

    kind = "Redis"

    def __init__(self, reactor, url):
        self.reactor, self.url = reactor, url
        self.where = f"the primary of {url.service!r}"
        self.timeout = 2 * url.timeout  # asking the sentinels, then connecting

    @defer.inlineCallbacks
    def connect(self, factory):
        host, port = yield ask_sentinels(self.reactor, self.url)
        self.where = _show(host, port)
        protocol = yield HostnameEndpoint(self.reactor, host, port, timeout=self.url.timeout).connect(factory)
        return protocol


class _SentinelEndpoint:
    kind = "Sentinel"

    def __init__(self, reactor, host, port, timeout):
        self.where, self.timeout = _show(host, port), timeout
        self._endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)

    def connect(self, factory):
        return self._endpoint.connect(factory)


class _SentinelQuery(ReportsRefusal, txredisapi.RedisFactory):
    protocol = _CommandProtocol


def ask_sentinels(reactor, url):
    """Deferred ``(host, port)`` of the service's primary, from the first sentinel that knows it
    (all asked at once); CannotConnect saying that none answered (with the first cause) or that
    none knows the service."""
    result = defer.Deferred()
    answers = []  # (where, [host, port] or None for "no such service" or the Failure)

    def answered(answer, where):
        answers.append((where, answer))
        if isinstance(answer, list) and not result.called:
            result.callback((answer[0], int(answer[1])))
        elif len(answers) == len(url.hosts) and not result.called:
            result.errback(CannotConnect(_no_primary(url, answers)))

    for host, port in url.hosts:
        endpoint = _SentinelEndpoint(reactor, host, port, url.timeout)
        _ask(reactor, endpoint, url).addBoth(answered, endpoint.where)
    return result


@defer.inlineCallbacks
def _ask(reactor, endpoint, url):
    factory = _SentinelQuery(None, None, 1, password=url.password, replyTimeout=url.timeout, convertNumbers=False)
    protocol = yield connect_once(reactor, endpoint, factory, url)
    try:
        address = yield protocol.execute_command("SENTINEL", "get-master-addr-by-name", url.service)
    except txredisapi.ResponseError as exc:
        raise CannotConnect(f"{endpoint.where} is no Sentinel? it answered {exc}") from None
    finally:
        protocol.transport.loseConnection()
    return list(address) if address else None


def _no_primary(url, answers):
    unknown = [where for where, answer in answers if answer is None]
    if unknown:
        return f"Sentinel at {unknown[0]} knows no service {url.service!r}"
    others = len(answers) - 1
    more = f" ({others} other{'s' if others > 1 else ''} failed too)" if others else ""
    return f"no Sentinel answered: {answers[0][1].getErrorMessage()}{more}"


def connect_once(reactor, endpoint, factory, url):
    """One attempt, of at most ``endpoint.timeout`` seconds: fires with the protocol once it is
    ready (authenticated, database selected), or fails with CannotConnect naming the cause."""
    attempt = {"protocol": None, "cancelled": False}

    def cancel(_):
        attempt["cancelled"] = True
        connecting.cancel()
        if attempt["protocol"] is not None and attempt["protocol"].transport is not None:
            attempt["protocol"].transport.loseConnection()

    result = defer.Deferred(cancel)

    def connected(protocol):
        attempt["protocol"] = protocol
        protocol.whenConnected().addCallback(lambda _: None if result.called else result.callback(protocol))
        protocol.whenDisconnected().addCallback(lost)

    def lost(protocol):
        if not result.called and not attempt["cancelled"]:
            result.errback(CannotConnect(explain(protocol.loss, endpoint, url, factory.refusal)))

    def failed(failure):
        if not result.called and not attempt["cancelled"]:
            result.errback(CannotConnect(explain(failure, endpoint, url)))

    factory.refusal = None
    connecting = defer.maybeDeferred(endpoint.connect, factory)
    connecting.addCallbacks(connected, failed)
    return result.addTimeout(endpoint.timeout, reactor, onTimeoutCancel=lambda value, timeout: _no_answer(
        value, endpoint, url, timeout))


def _no_answer(value, endpoint, url, timeout):
    if isinstance(value, Failure) and value.check(defer.CancelledError):
        hint = " (rediss://: is it a TLS port?)" if url.tls else ""
        raise CannotConnect(f"no answer from {endpoint.where} within {timeout:g} s{hint}")
    return value


def explain(failure, endpoint, url, refusal=None):
    """One line naming why an attempt to connect to ``endpoint`` failed."""
    where, kind = endpoint.where, endpoint.kind
    if refusal:  # txredisapi: "Redis error: could not auth: <reply>" / "... could not set dbid=N: <reply>"
        reply = refusal.split(": ", 2)[-1]
        if "could not auth" in refusal:
            return f"authentication failed at {where}: {reply}"
        if reply.startswith("NOAUTH"):
            return f"authentication required: {where} wants a password and the URL gives none ({reply})"
        if "out of range" in reply:
            return f"no database {url.db} at {where} ({reply})"
        return f"cannot use database {url.db} at {where}: {reply}"
    if failure.check(CannotConnect):
        return failure.getErrorMessage()
    if failure.check(error.ConnectionRefusedError):
        return f"connection refused: is {kind} running at {where}?"
    if failure.check(error.DNSLookupError):
        return f"cannot resolve the host of {where}"
    if failure.check(error.TimeoutError):
        return f"no answer from {where} within {url.timeout:g} s"
    if failure.check(SSL.Error):
        reasons = ", ".join(reason for *_, reason in (failure.value.args[0] if failure.value.args else []) if reason)
        hint = " (is it a TLS port?)" if "wrong version" in reasons or "packet length" in reasons else ""
        return f"TLS with {where} failed: {reasons or failure.getErrorMessage()}{hint}"
    if failure.check(error.ConnectionDone, error.ConnectionLost):
        hint = ""
        if kind == "Redis" and url.service:
            hint = " (not a primary? a failover may be under way)"
        elif kind == "Redis" and not url.tls:
            hint = " (a TLS port? then use rediss://)"
        return f"{where} closed the connection before it was ready{hint}"
    return f"{where}: {failure.getErrorMessage()}"


def _ended(loss):
    """How a connection that was up ended, in a few words."""
    if loss is None or loss.check(error.ConnectionDone):
        return "closed by the server"
    if loss.check(error.ConnectionLost):
        return "the connection broke"
    return loss.getErrorMessage()


class Link:
    """One connection of a txredisapi ``factory`` to ``endpoint``, made and remade here: ``start``
    is one attempt (its cause on failure); once up, a lost connection is made again with
    txredisapi's backoff (``factory.retryDelay``), logged once per outage."""

    def __init__(self, reactor, factory, endpoint, url, name):
        self.reactor, self.factory, self.endpoint, self.url, self.name = reactor, factory, endpoint, url, name
        self.protocol = None  # the connection while it is up
        self.outages = 0  # connections lost
        self.attempts = 0  # attempts to reconnect after a loss
        self._attempt = None
        self._retry = None
        self._stopped = False
        self._down_since = None
        self._failures = 0

    def start(self):
        """Fires with the protocol once connected and ready; fails with CannotConnect."""
        return self._connect().addCallback(self._up)

    def stop(self):
        """Stop reconnecting and close the connection; fires when it is closed."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()
        return defer.maybeDeferred(self.factory.disconnect)

    def _connect(self):
        d = self._attempt = connect_once(self.reactor, self.endpoint, self.factory, self.url)
        return d.addBoth(self._attempted)

    def _attempted(self, result):
        self._attempt = None
        return result

    def _up(self, protocol):
        self.protocol = protocol
        protocol.whenDisconnected().addCallback(self._lost)
        if self._down_since is not None:
            log.info("{name}: connected to {where} again after {seconds:.1f} s", name=self.name,
                     where=self.endpoint.where, seconds=time.monotonic() - self._down_since)
            self._down_since = None
        return protocol

    def _lost(self, protocol):
        self.protocol = None
        if self._stopped:
            return
        self.outages += 1
        self._down_since, self._failures = time.monotonic(), 0
        log.warn("{name}: lost the connection to {where} ({cause}); reconnecting with backoff (up to {most:g} s)",
                 name=self.name, where=self.endpoint.where, most=self.factory.maxDelay, cause=_ended(protocol.loss))
        self._schedule()

    def _schedule(self):
        self._failures += 1
        self._retry = self.reactor.callLater(self.factory.retryDelay(self._failures), self._again)

    def _again(self):
        self._retry = None
        self.attempts += 1
        self._connect().addCallbacks(self._up, self._still_down)

    def _still_down(self, failure):
        if self._stopped:
            return
        if not failure.check(CannotConnect):
            log.failure("{name}: reconnecting failed", failure, name=self.name)
        elif self._failures == 1:  # the first reason of this outage; the others stay quiet
            log.warn("{name}: cannot reconnect yet: {cause}", name=self.name, cause=failure.getErrorMessage())
        self._schedule()


class Redis:
    """The store's connections: ``call(command, *args)`` and ``evalsha``, bounded by the timeout."""

    def __init__(self, url, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url, self.reactor = url, reactor
        self.handler = None
        self.link = None

    def connect(self):
        """One attempt to connect; fires once connected (later losses reconnect by themselves),
        fails with StoreUnavailable naming the cause."""
        factory = command_factory(self.url)
        self.link = self.link_for(factory, "redis store")
        self.handler = factory.handler
        d = self.link.start()
        d.addErrback(lambda failure: _unavailable(failure.getErrorMessage()) if failure.check(CannotConnect)
                     else failure)
        return d.addCallback(lambda _: self.call("PING"))

    def link_for(self, factory, name):
        """A Link of ``factory`` to this URL's server (the primary, through Sentinel if any)."""
        if self.url.service:
            endpoint = SentinelMasterEndpoint(self.reactor, self.url)
        else:
            endpoint = ServerEndpoint(self.reactor, self.url)
        return Link(self.reactor, factory, endpoint, self.url, name)

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
        """Stop reconnecting and close the connection."""
        if self.link is None:
            return defer.succeed(None)
        return self.link.stop().addErrback(lambda _: None)


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
