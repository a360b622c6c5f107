"""TbcoapService: one tbcoap node (store, CoAP port, HTTP port) as a Twisted Service."""

from __future__ import annotations

import atexit
import errno
import os
import sys

from twisted.application.service import Service
from twisted.internet import defer, error as neterror
from twisted.logger import Logger

import tbcoap
from tbcoap import datadir
from tbcoap.coap.dtls import DtlsEndpoint, server_context
from tbcoap.coap.messagelayer import MessageLayer
from tbcoap.core import Core
from tbcoap.deviceapi.api import DeviceApi
from tbcoap.rest.app import make_site
from tbcoap.rest.auth import load_admin_key
from tbcoap.deviceapi.observers import ObserverRegistry
from tbcoap.events import LocalBus
from tbcoap.metrics import LatencyHistogram, registry_for
from tbcoap.plugins import AUTH_HOOK, STORE_HOOK
from tbcoap.ratelimit import RateLimiter, parse_rate_limit
from tbcoap.service import check_rules, check_store
from tbcoap.services.certificates import digest
from tbcoap.services.values import Limits
from tbcoap.workers import WorkerSupervisor, shared_tcp, shared_udp, watch_parent

log = Logger()


class TbcoapService(Service):
    """Opens the store, listens for CoAP and HTTP, and shuts down without losing data.

    ``coap_address`` and ``http_address`` are ``(host, port)`` once started
    (the ports actually bound, also with port 0).
    """

    def __init__(self, settings, plugins, exit_on_error=False, reactor=None):
        from twisted.internet import reactor as default_reactor

        self.settings = settings
        self.plugins = plugins
        self.reactor = reactor or default_reactor
        self.exit_on_error = exit_on_error
        backend = check_store(settings, plugins)
        self.store_scheme = backend.scheme
        try:
            self.store = backend.factory(settings["store"], settings)
        except ValueError as exc:
            self._fatal_now(f"--store: {exc}")
        limits = Limits(max_keys=settings["max-request-keys"], max_key_length=settings["max-key-length"],
                        max_string_bytes=settings["max-value-size"])
        self.core = Core(self.store, plugins, rules=check_rules(settings, plugins), limits=limits,
                         bus=self.store.bus() or LocalBus(),
                         rule_timeout=settings["rule-timeout"], claim_duration_ms=settings["claim-duration"],
                         ts_ttl_ms=settings.get("ts-ttl", 0) * 1000)
        self.observers = ObserverRegistry(self.core, max_per_device=settings["max-device-observations"])
        self.device_api = DeviceApi(self.core, self.observers, max_body=settings["max-body"],
                                    device_limiter=_limiter(settings["device-rate-limit"]),
                                    peer_limiter=_limiter(settings["peer-rate-limit"]),
                                    provision_limiter=_limiter(settings["provision-rate-limit"]))
        self.coap = self._message_layer()
        self.coaps = self.dtls = None
        if settings.get("dtls-cert"):
            try:
                context = server_context(settings["dtls-cert"], settings["dtls-key"], settings.get("dtls-ca"))
            except ValueError as exc:
                self._fatal_now(str(exc))
            self.coaps = self._message_layer()
            self.dtls = DtlsEndpoint(context, self.coaps, self.reactor, identify=digest,
                                     max_sessions=settings["dtls-max-sessions"])
            self.coaps.identify = self.dtls.identity
        if settings.get("latency-metrics", "on") == "on":
            for layer in (self.coap, self.coaps):
                if layer is not None:
                    layer.latency = LatencyHistogram()
        self.metrics = registry_for(self)
        self.backup_running = False
        self.admin_key = None
        self.lock = None
        self.site = None
        self.supervisor = None
        self.shared_ports = settings.get("workers", 1) > 1 or settings.get("worker", False)
        if settings.get("workers", 1) > 1:
            if self.store.bus() is None:
                self._fatal_now(f"--workers needs a store several nodes can share (redis://...); "
                                f"the {self.store.name} store is one node's")
            self.supervisor = WorkerSupervisor(self, settings["workers"], settings.get("worker-args", []))
        self.coap_port = self.http_port = self.coaps_port = None
        self.coap_address = self.http_address = self.coaps_address = None
        self.opened = None

    def _message_layer(self):
        """A message layer for the device API (one per port: CoAP, and CoAPS over DTLS)."""
        settings = self.settings
        return MessageLayer(self.device_api, max_body=settings["max-body"],
                            piggyback_window=settings["piggyback-timeout"] / 1000,
                            ack_timeout=settings["ack-timeout"], max_retransmit=settings["max-retransmit"],
                            dedup_cap=settings["dedup-entries"], answer_cache=settings["answer-cache"],
                            max_observations=settings["max-observations"],
                            max_peer_observations=settings["max-peer-observations"],
                            notification_bytes=settings["notification-queue"])

    def _fatal_now(self, message):
        if self.exit_on_error:
            raise SystemExit(f"tbcoap: {message}")
        raise RuntimeError(message)

    def startService(self):
        """Lock the data directory, load the admin key, listen, then open the store.

        A failure here leaves nothing behind: ports are closed and the lock released; under
        twistd the process logs why and exits with status 1 through the reactor's orderly
        stop (so twistd removes its pidfile), embedded it raises RuntimeError.
        """
        super().startService()
        try:
            self._start()
        except StartFailed as exc:
            self._undo_start()
            if not self.exit_on_error:
                raise RuntimeError(str(exc)) from None
            print(f"tbcoap: {exc}", file=sys.stderr)
            self._start_failed(str(exc))

    def _start(self):
        settings = self.settings
        if settings.get("worker"):
            watch_parent(self.reactor)  # the first node holds the lock for its workers
        else:
            try:
                self.lock = datadir.Lock(settings["data-dir"])
            except datadir.DataDirBusy as exc:
                raise StartFailed(str(exc)) from None
            except OSError as exc:
                raise StartFailed(f"cannot use the data directory {settings['data-dir']}: {exc}") from None
            if datadir.remove_stale_backups(settings["data-dir"]):
                log.info("removed the snapshot files of backups that a stopped node left unsent")
        try:
            self.admin_key = load_admin_key(settings)
        except (OSError, ValueError) as exc:
            raise StartFailed(f"cannot read or keep the admin key: {exc}") from None
        if settings.get("worker"):  # a worker takes its share of the ports only once it can serve
            self.opened = self._open()
            self.opened.addCallback(self._bind_when_ready)
            return
        self._bind()
        self.opened = self._open()
        if self.supervisor is not None:
            self.supervisor.start_workers()

    def _bind_when_ready(self, _):
        if not self.core.ready:
            return
        try:
            self._bind()
        except StartFailed as exc:
            self._undo_start()
            self._start_failed(str(exc))

    def _bind(self):
        """Listen on the CoAP and HTTP ports and log them."""
        settings = self.settings
        self.coap_port = self._listen_udp("CoAP", self.coap, settings["coap-interface"], settings["coap-port"])
        if self.dtls is not None:
            self.coaps_port = self._listen_udp("CoAPS", self.dtls, settings["coaps-interface"], settings["coaps-port"])
        site = self.site = make_site(self)
        try:
            if self.shared_ports:
                self.http_port = shared_tcp(self.reactor, settings["http-interface"], settings["http-port"], site)
            else:
                self.http_port = self.reactor.listenTCP(settings["http-port"], site,
                                                        interface=settings["http-interface"])
        except (neterror.CannotListenError, OSError) as exc:
            raise StartFailed(f"cannot listen for HTTP: {exc}") from None
        self.coap_address = _address(self.coap_port)
        self.http_address = _address(self.http_port)
        log.info("CoAP listening on udp {address}", address=_show(self.coap_address))
        if self.coaps_port is not None:
            self.coaps_address = _address(self.coaps_port)
            log.info("CoAPS listening on udp {address}", address=_show(self.coaps_address))
        log.info("HTTP listening on tcp {address}", address=_show(self.http_address))

    def _undo_start(self):
        for port in (self.coap_port, self.coaps_port, self.http_port):
            if port is not None:
                port.stopListening()
        self.coap_port = self.coaps_port = self.http_port = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _listen_udp(self, what, protocol, interface, port):
        """Bind a UDP port for ``protocol`` (all IPv4 addresses when '::' is not available here)."""
        try:
            return self._bind_udp(protocol, interface, port)
        except (neterror.CannotListenError, OSError) as exc:
            error = getattr(exc, "socketError", exc)
            no_ipv6 = interface == "::" and getattr(error, "errno", None) in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
            if not no_ipv6:
                raise StartFailed(f"cannot listen for {what}: {exc}") from None
        try:
            return self._bind_udp(protocol, "0.0.0.0", port)
        except (neterror.CannotListenError, OSError) as exc:
            raise StartFailed(f"cannot listen for {what}: {exc}") from None

    def _bind_udp(self, protocol, interface, port):
        if self.shared_ports:
            return shared_udp(self.reactor, interface, port, protocol, MAX_DATAGRAM)
        return self.reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=MAX_DATAGRAM)

    @defer.inlineCallbacks
    def _open(self):
        """Open the store, start the services and the active plugins; a failure stops a twistd node."""
        try:
            yield self.store.open()
        except Exception as exc:
            self._start_failed(f"cannot open the store: {exc}")
            return
        log.info("store {name} open", name=self.store.name)
        try:
            yield self.core.bus.start()  # before serving: no change made after a registration is missed
        except Exception as exc:
            self._start_failed(f"cannot start the {self.store.name} store's bus: {exc}")
            return
        try:
            yield self.plugins.startup()
        except Exception as exc:
            self._start_failed(f"cannot start: {exc}")
            return
        yield self.core.start()  # from here on requests are served
        log.info("{line}", line=self.in_use())

    def in_use(self):
        """One line: the tbcoap version and the store, rule and auth plugins this node uses."""
        plugins = self.plugins
        rules = self.core.rules.names
        return (f"tbcoap {tbcoap.__version__} using store {self.store_scheme} "
                f"(plugin {', '.join(plugins.in_use([STORE_HOOK]))}), "
                f"rules {', '.join(rules) if rules else 'none'}, auth {', '.join(plugins.in_use([AUTH_HOOK]))}")

    def _start_failed(self, message):
        log.critical("{message}", message=message)  # embedded, the node answers 5.03 until it is stopped
        if self.exit_on_error:
            # twistd would exit 0 after reactor.stop(): leave with 1 once it has cleaned up (pidfile too)
            atexit.register(os._exit, 1)
            if self.reactor.running:
                self.reactor.stop()
            else:
                self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop the workers, refuse new requests, commit and answer what waits, close the store,
        then the ports."""
        super().stopService()
        if self.supervisor is not None:
            yield self.supervisor.stopService()
        for layer in (self.coap, self.coaps):
            if layer is not None:
                layer.refusing = True
        if self.http_port is not None:
            yield self.http_port.stopListening()
        if self.opened is not None and self.opened.called:
            try:
                yield self.core.stop()
                yield self.plugins.shutdown(self.reactor)
            finally:
                yield self.core.bus.close()
                yield self.store.close()
        else:
            self.core.ready = False
        if self.dtls is not None and self.coaps_port is not None:
            self.dtls.close_sessions()
        for port in (self.coap_port, self.coaps_port):
            if port is not None:
                yield port.stopListening()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        log.info("tbcoap stopped")

    def stats(self):
        """Every counter of this node (for /api/admin/stats)."""
        api = self.device_api
        limits = {name: limiter.stats() for name, limiter in (("device", api.device_limiter),
                                                              ("peer", api.peer_limiter),
                                                              ("provision", api.provision_limiter))
                  if limiter is not None}
        http = {"refused": dict(sorted(self.site.refusals.items())) if self.site is not None else {}}
        process = {"pid": os.getpid(), "worker": bool(self.settings.get("worker")),
                   "workers": self.settings.get("workers", 1)}
        secure = {"coaps": self.coaps.stats(), "dtls": self.dtls.stats()} if self.dtls is not None else {}
        return {"process": process, "coap": self.coap.stats(), **secure, "http": http,
                "observers": self.observers.stats(),
                "rateLimits": limits,
                **self.core.stats(), "plugins": self.plugins.stats()}


MAX_DATAGRAM = 65536  # read whole datagrams (Twisted's default 8 KiB would cut them)


class StartFailed(Exception):
    """The node cannot start; the message says why, in one line."""


def _limiter(spec):
    return RateLimiter(parse_rate_limit(spec)) if spec and spec != "off" else None


def _address(port):
    host = port.getHost()
    return host.host, host.port


def _show(address):
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
