"""TbcoapService: one tbcoap node (store, CoAP port, HTTP port) as a Twisted Service."""

from __future__ import annotations

import atexit
import errno
import os
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import defer, error as neterror
from twisted.logger import Logger

import tbcoap
from tbcoap import datadir
from tbcoap.choices import ChoiceError, choose
from tbcoap.coap.dtls import DtlsEndpoint
from tbcoap.coap.dtlslayer import SessionLayer
from tbcoap.coap.messagelayer import MessageLayer
from tbcoap.core import Core
from tbcoap.deviceapi.api import DeviceApi
from tbcoap.deviceapi.observers import ObserverRegistry
from tbcoap.deviceapi.sessions import SessionCredentials
from tbcoap.errors import StoreUnavailable
from tbcoap.events import LocalBus
from tbcoap.metrics import LatencyHistogram, registry_for
from tbcoap.plugins import AUTH_HOOK, STORE_HOOK
from tbcoap.ratelimit import RateLimiter, parse_counts, parse_rate_limit
from tbcoap.rest.app import make_site
from tbcoap.websocket.protocol import PATHS as SOCKET_PATHS, make_resource
from tbcoap.rest.auth import load_admin_key
from tbcoap.services.keycap import parse_device_keys
from tbcoap.services.values import Limits
from tbcoap.workers import WorkerSupervisor, shared_tcp, shared_udp, watch_parent

log = Logger()


class TbcoapService(Service):
    """Opens the store, listens for CoAP and HTTP, and shuts down without losing data.

    ``coap_address`` and ``http_address`` are ``(host, port)`` once started
    (the ports actually bound, also with port 0).
    """

    def __init__(self, settings, plugins, choices=None, exit_on_error=False, reactor=None):
        """``choices``: what ``tbcoap.choices.choose`` made of the settings (``Options`` does it for
        twistd); without them the node chooses itself and raises NodeError for a bad choice."""
        from twisted.internet import reactor as default_reactor

        if choices is None:
            try:
                choices = choose(settings, plugins)
            except ChoiceError as exc:
                raise NodeError(str(exc)) from None
        self.settings = settings
        self.plugins = plugins
        self.reactor = reactor or default_reactor
        self.exit_on_error = exit_on_error
        self.store_scheme = choices.backend.scheme
        self.store = choices.store
        limits = Limits(max_keys=settings["max-request-keys"], max_key_length=settings["max-key-length"],
                        max_string_bytes=settings["max-value-size"])
        self.core = Core(self.store, plugins, rules=choices.rules, limits=limits,
                         bus=self.store.bus() or LocalBus(),
                         rule_timeout=settings["rule-timeout"], claim_duration_ms=settings["claim-duration"],
                         ts_ttl_ms=settings.get("ts-ttl", 0) * 1000,
                         max_subscriptions=settings.get("ws-max-subscriptions", 100_000),
                         max_device_keys=parse_device_keys(settings.get("max-device-keys", "1000,1000")),
                         device_keys_cache=settings.get("device-keys-cache", 16 << 20),
                         inactivity_timeout_ms=settings.get("inactivity-timeout", 600) * 1000,
                         max_queued_rpcs=settings.get("max-queued-rpcs", 100))
        self.observers = ObserverRegistry(self.core, max_per_device=settings["max-device-observations"],
                                          max_held_bytes=settings.get("max-held-attributes", 65536))
        self.core.ota.max_size = settings.get("max-ota-size", self.core.ota.max_size)
        self.device_api = DeviceApi(self.core, self.observers, max_body=settings["max-body"],
                                    device_limiter=_limiter(settings["device-rate-limit"]),
                                    peer_limiter=_limiter(settings["peer-rate-limit"]),
                                    provision_limiter=_limiter(settings["provision-rate-limit"]))
        self.coap = self._message_layer()
        self.coaps = self.dtls = None
        if choices.dtls_context is not None:
            self.coaps = self._message_layer(SessionLayer)
            credentials = SessionCredentials(self.core.devices)
            self.dtls = DtlsEndpoint(choices.dtls_context, self.coaps, self.reactor,
                                     identify=credentials.certificate, psk=credentials,
                                     max_sessions=settings["dtls-max-sessions"],
                                     max_handshakes=settings["dtls-max-handshakes"],
                                     handshake_rate=parse_counts(settings["dtls-handshake-rate"], 3),
                                     session_rate=parse_counts(settings["dtls-session-rate"], 2),
                                     receive_buffer=settings.get("coaps-receive-buffer", 4 << 20))
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
        self.live_hub = None  # the WebSocket connections (tbcoap.websocket), once bound
        self.supervisor = None
        self.worker = settings.get("worker", 0)  # 0: the first node; N: worker N of a --workers node
        self.workers = settings.get("workers", 1)
        self.shared_ports = self.workers > 1 or bool(self.worker)
        if self.workers > 1 and not self.worker:
            self.supervisor = WorkerSupervisor(self, self.workers, settings.get("worker-args", []))
        self.coap_port = self.http_port = self.coaps_port = None
        self.coap_address = self.http_address = self.coaps_address = None
        self.opened = None

    def _message_layer(self, kind=MessageLayer):
        """A message layer for the device API (one per port: CoAP, and CoAPS over DTLS)."""
        settings = self.settings
        return kind(self.device_api, max_body=settings["max-body"],
                            piggyback_window=settings["piggyback-timeout"] / 1000,
                            ack_timeout=settings["ack-timeout"], max_retransmit=settings["max-retransmit"],
                            dedup_cap=settings["dedup-entries"], answer_cache=settings["answer-cache"],
                            max_observations=settings["max-observations"],
                            max_peer_observations=settings["max-peer-observations"],
                            notification_bytes=settings["notification-queue"])

    def startService(self):
        """Lock the data directory, bind the ports, load the admin key, open the store; the ports
        are announced ("CoAP listening on ...") once the store is open and requests are served.

        A failure here leaves nothing behind: ports are closed and the lock released; under
        twistd the process logs why in one line and exits with status 1 through the reactor's
        orderly stop (so twistd removes its pidfile), embedded it raises NodeError.
        """
        super().startService()
        try:
            self._start()
        except StartFailed as exc:
            self._undo_start()
            if not self.exit_on_error:
                raise NodeError(str(exc)) from None
            self._start_failed(str(exc))

    def _start(self):
        settings = self.settings
        if self.worker:
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
            self._bind()  # a busy port stops the start before anything is written
        try:
            self.admin_key, origin = load_admin_key(settings)
        except (OSError, ValueError) as exc:
            raise StartFailed(f"cannot read or keep the admin key: {exc}") from None
        if not self.worker:
            log.info("{origin}", origin=origin)
        self.opened = self._open()

    def _bind(self):
        """Bind the CoAP (and CoAPS) and HTTP ports; announced by ``_announce`` once serving."""
        settings = self.settings
        self.coap_port = self._listen_udp("CoAP", self.coap, "coap")
        if self.dtls is not None:
            self.coaps_port = self._listen_udp("CoAPS", self.dtls, "coaps")
        socket, self.live_hub = make_resource(self)
        site = self.site = make_site(self, dict.fromkeys(SOCKET_PATHS, socket))
        interface, port = settings["http-interface"], settings["http-port"]
        try:
            if self.shared_ports:
                self.http_port = shared_tcp(self.reactor, interface, port, site)
            else:
                self.http_port = self.reactor.listenTCP(port, site, interface=interface)
        except (neterror.CannotListenError, OSError) as exc:
            raise StartFailed(_cannot_listen("HTTP", "tcp", interface, port, exc, "http")) from None
        self.coap_address = _address(self.coap_port)
        self.http_address = _address(self.http_port)
        if self.coaps_port is not None:
            self.coaps_address = _address(self.coaps_port)

    def _announce(self):
        log.info("CoAP listening on udp {address}", address=_show(self.coap_address))
        if self.coaps_address is not None:
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

    def _listen_udp(self, what, protocol, option):
        """Bind a UDP port for ``protocol`` (all IPv4 addresses when '::' is not available here)."""
        interface, port = self.settings[f"{option}-interface"], self.settings[f"{option}-port"]
        try:
            return self._bind_udp(protocol, interface, port)
        except (neterror.CannotListenError, OSError) as exc:
            error = getattr(exc, "socketError", exc)
            no_ipv6 = interface == "::" and getattr(error, "errno", None) in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
            if not no_ipv6:
                raise StartFailed(_cannot_listen(what, "udp", interface, port, exc, option)) from None
        try:
            return self._bind_udp(protocol, "0.0.0.0", port)
        except (neterror.CannotListenError, OSError) as exc:
            raise StartFailed(_cannot_listen(what, "udp", "0.0.0.0", port, exc, option)) from None

    def _bind_udp(self, protocol, interface, port):
        if self.shared_ports:
            return shared_udp(self.reactor, interface, port, protocol, MAX_DATAGRAM)
        return self.reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=MAX_DATAGRAM)

    @defer.inlineCallbacks
    def _open(self):
        """Open the store, start the services and the active plugins, then serve (a worker binds
        its share of the ports only now); a failure stops a twistd node."""
        log.info("opening the {scheme} store (requests are answered once it is open)", scheme=self.store_scheme)
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
        if self.worker:
            try:
                self._bind()
            except StartFailed as exc:
                self._undo_start()
                self._start_failed(str(exc))
                return
        self._announce()
        log.info("{line}", line=self.in_use())
        if self.supervisor is not None:
            self.supervisor.start_workers()

    def in_use(self):
        """One line: the tbcoap version and the store, rule and auth plugins this node uses."""
        plugins = self.plugins
        rules = self.core.rules.names
        return (f"tbcoap {tbcoap.__version__} using store {self.store_scheme} "
                f"(plugin {', '.join(plugins.in_use([STORE_HOOK]))}), "
                f"rules {', '.join(rules) if rules else 'none'}, auth {', '.join(plugins.in_use([AUTH_HOOK]))}")

    def _start_failed(self, message):
        log.critical("tbcoap: {message}", message=message)  # embedded, the node answers 5.03 until stopped
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

    @defer.inlineCallbacks
    def health(self):
        """``{part: what is wrong}`` for each part of this node that is down (``{}``: all up)."""
        down = {}
        if self.coap_port is None or not self.coap_port.connected:
            down["coap"] = "not listening"
        if not self.core.ready:
            down["store"] = f"{self.store.name} store not open"
        else:
            try:
                yield self.store.check()
            except Exception as exc:
                down["store"] = f"{self.store.name}: {exc}"
        return down

    @defer.inlineCallbacks
    def take_backup(self):
        """A consistent snapshot of the store in a new file of the data directory, taken while the
        node serves, for one download at a time: a ``Snapshot`` whose ``release()`` removes the file
        and frees the slot.  StoreUnavailable while another is taken or sent; NotSupported from a
        store that has backups of its own."""
        if self.backup_running:
            raise StoreUnavailable("a backup is being taken already; try again when it is done")
        self.backup_running = True
        path = datadir.backup_path(self.settings["data-dir"])

        def release():
            self.backup_running = False
            datadir.remove(path)

        try:
            yield self.store.backup(path)
        except BaseException:
            release()
            raise
        content_type, suffix = self.store.backup_type
        return Snapshot(path, content_type, suffix, release)

    def stats(self):
        """Every counter of this node (for /api/admin/stats)."""
        api = self.device_api
        limits = {name: limiter.stats() for name, limiter in api.limiters().items()}
        http = {"refused": {str(status): self.site.refusals.get(status, 0) if self.site is not None else 0
                            for status in HTTP_REFUSALS}}
        process = {"pid": os.getpid(), "worker": self.worker, "workers": self.workers}
        secure = {"coaps": self.coaps.stats(), "dtls": self.dtls.stats()} if self.dtls is not None else {}
        return {"process": process, "coap": self.coap.stats(), **secure, "http": http,
                "observers": self.observers.stats(),
                "websocket": self.live_hub.stats() if self.live_hub is not None else {},
                "rateLimits": limits,
                **self.core.stats(), "plugins": self.plugins.stats()}


MAX_DATAGRAM = 65536
HTTP_REFUSALS = (413, 414, 431)  # what the REST API's limits refuse (tbcoap.rest.limits)  # read whole datagrams (Twisted's default 8 KiB would cut them)


@dataclass(frozen=True)
class Snapshot:
    """A backup waiting in the data directory: its file, content type and file-name suffix;
    ``release()`` once it was sent (or not)."""

    path: str
    content_type: str
    suffix: str
    release: object


class NodeError(RuntimeError):
    """This node cannot be built or started as asked; the message says why, in one line."""


class StartFailed(Exception):
    """The start cannot go on; the message says why, in one line."""


def _cannot_listen(what, protocol, interface, port, exc, option):
    error = getattr(exc, "socketError", None) or exc
    reason = getattr(error, "strerror", None) or str(error)
    host = f"[{interface}]" if ":" in interface else interface
    return (f"cannot listen for {what} on {protocol} {host}:{port}: {reason} "
            f"(choose another with --{option}-port or --{option}-interface; port 0 takes any free one)")


def _limiter(spec):
    return RateLimiter(parse_rate_limit(spec)) if spec and spec != "off" else None


def _address(port):
    host = port.getHost()
    return host.host, host.port


def _show(address):
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
