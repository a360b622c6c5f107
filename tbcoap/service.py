"""``twistd tbcoap``: the options, the config file and the Service tree.

Options override the TOML config file, which overrides the defaults.
``makeService`` (for twistd) and ``service_from_args`` (for embedding) both
return a ``TbcoapService``.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import tomllib

from twisted.python import usage

from tbcoap import datadir
from tbcoap.choices import ChoiceError, choose
from tbcoap.datadir import DEFAULT_DATA_DIR
from tbcoap.node import TbcoapService
from tbcoap.pluginconfig import Given, SettingError, collect
from tbcoap.plugins import PluginManager
from tbcoap.ratelimit import parse_counts, parse_rate_limit
from tbcoap.services.keycap import parse_device_keys

GC_THRESHOLDS = (20_000, 50, 100)
MIN_REST_BODY = 65536  # a valid key may always send this much (what an unauthenticated request may)

_SIZE = re.compile(r"(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)", re.I)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value) -> int:
    """Seconds from ``3600``, ``"3600s"``, ``"90m"``, ``"12h"`` or ``"90d"`` (0: none)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _DURATION.fullmatch(str(value).strip().lower())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def size(value) -> int:
    """A size in bytes from ``65536``, ``"64KiB"``, ``"64k"`` or ``"1MiB"`` (units of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"not a size: {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)[:1].lower()]


# name: (default, converter, help)
SETTINGS = {
    "coap-port": (5683, int, "UDP port of the CoAP device API (0: any free port)"),
    "coap-interface": ("::", str, "address to listen on for CoAP ('::' or '0.0.0.0': all)"),
    "http-port": (8080, int, "TCP port of the REST API (0: any free port)"),
    "http-interface": ("127.0.0.1", str, "address to listen on for REST"),
    "data-dir": (DEFAULT_DATA_DIR, str, "directory for the SQLite file and the generated admin key"),
    "store": (None, str, "store URL: sqlite:///PATH (default <data-dir>/tbcoap.sqlite3), or a plugin's scheme"),
    "admin-key": (None, str, "REST admin key (else $TBCOAP_ADMIN_KEY, else generated into data-dir)"),
    "max-body": (65536, int, "largest request body in bytes (4.13 above)"),
    "sync": (None, str, "SQLite: normal (default): commits survive a killed process; full: also a power loss "
                        "(an alias of --plugin-option sqlite.sync=...)"),
    "device-rate-limit": (None, str, "per device token: at most N requests in S seconds, N:S[,N:S] (4.29)"),
    "peer-rate-limit": (None, str, "per source address and port, N:S[,N:S] (4.29)"),
    "piggyback-timeout": (500, int, "ms to answer in the ACK before sending an empty ACK first"),
    "rules": ("echo", str, "rule plugins answering client-side RPC, in order: NAME[,NAME] or none"),
    "rule-timeout": (10.0, float, "seconds a rule may take before the device gets 5.03"),
    "claim-duration": (86_400_000, int, "ms a device's claim request lasts when it gives no durationMs"),
    "ack-timeout": (2.0, float, "seconds before a CON notification is first retransmitted (RFC 7252 ACK_TIMEOUT)"),
    "max-retransmit": (4, int, "retransmissions of a CON notification before its observation ends"),
    "max-device-observations": (16, int, "observations per device; one more ends the device's oldest"),
    "max-peer-observations": (1000, int, "observations per source IP address (5.03 with Max-Age beyond)"),
    "max-observations": (100_000, int, "observations in all (5.03 with Max-Age beyond)"),
    "answer-cache": ("64MiB", size, "bytes of answers kept for duplicate requests and Block2 transfers"),
    "notification-queue": ("64MiB", size, "bytes of notifications waiting behind unacknowledged ones"),
    "dedup-entries": (1_000_000, int, "requests remembered for duplicate detection (oldest go first)"),
    "provision-rate-limit": ("10:60", str, "provisioning requests per source IP address, N:S[,N:S] (4.29)"),
    "max-request-keys": (1000, int, "keys in one telemetry or attribute upload"),
    "max-key-length": (255, int, "characters in a telemetry or attribute key"),
    "max-value-size": ("64KiB", size, "UTF-8 bytes of one STRING or JSON value"),
    "max-device-keys": ("1000,1000", str, "distinct keys of one device: N for telemetry and for each attribute "
                                          "scope, or TELEMETRY,ATTRIBUTES (a new key past it: 4.13 / 400)"),
    "device-keys-cache": ("16MiB", size, "bytes of the keys each device is known to have, kept so that "
                                         "--max-device-keys asks the store only about a key never seen"),
    "max-rest-body": ("1MiB", size, "largest REST request body (413 above; 64 KiB before a valid key)"),
    "max-ota-size": ("256MiB", size, "largest firmware or software package (its upload alone may be this big)"),
    "admin-key-file": (None, str, "file holding the REST admin key (safer than --admin-key)"),
    "workers": (1, int, "node processes sharing the CoAP and HTTP ports (needs a store nodes can share: redis, postgresql)"),
    "coaps-port": (5684, int, "UDP port of CoAP over DTLS (CoAPS), served when --dtls-cert is given"),
    "coaps-interface": ("::", str, "address to listen on for CoAPS ('::' or '0.0.0.0': all)"),
    "dtls-cert": (None, str, "PEM file: the server's certificate chain for CoAPS (CoAPS listens only with it)"),
    "dtls-key": (None, str, "PEM file: the private key of --dtls-cert"),
    "dtls-ca": (None, str, "PEM file of the CAs client certificates must chain to (default: any is taken)"),
    "dtls-max-sessions": (10_000, int, "DTLS sessions at once (the least recently active ends for a new one)"),
    "dtls-max-handshakes": (1_000, int, "DTLS handshakes in progress at once, at most --dtls-max-sessions "
                                        "(the oldest is dropped for a new one, never a session)"),
    "dtls-handshake-rate": ("50,100,1000", str, "full DTLS handshakes: per second per source address, that "
                                                "address's burst, per second in all (a ClientHello past them "
                                                "is dropped); off: no limit"),
    "coaps-receive-buffer": ("4MiB", size, "bytes the kernel holds for the CoAPS port while the node is busy "
                                           "(SO_RCVBUF; past the system's limit only where the process may)"),
    "dtls-session-rate": ("100,200", str, "datagrams one DTLS session may send: per second, burst (past "
                                            "them they are dropped); off: no limit"),
    "ts-ttl": ("0", duration, "delete time-series points older than this: 90d, 12h, 3600s or seconds (0: keep)"),
    "inactivity-timeout": ("600", duration, "a device is inactive this long after its last request, unless its "
                                            "inactivityTimeout attribute says otherwise: 10m, 600s or seconds"),
    "max-queued-rpcs": (100, int, "server-side RPCs waiting for one device (QUEUED, SENT or DELIVERED); 429 beyond"),
    "max-held-attributes": ("64KiB", size, "bytes of shared-attribute changes held for one sleeping device's "
                                           "observation (beyond: the whole set at its next uplink)"),
    "metrics-key": (None, str, "a key that may read GET /metrics (besides the admin key)"),
    "write-timeout": (60.0, float, "seconds a download or history answer waits for a client that stopped reading"),
    "ws-max-connections-per-key": (64, int, "WebSocket connections one API key may hold open at once"),
    "ws-max-subscriptions-per-connection": (1000, int, "live subscriptions on one WebSocket connection"),
    "ws-max-subscriptions": (100_000, int, "live subscriptions on this node, all connections together"),
    "ws-max-queue": ("1MiB", size, "bytes of updates waiting for a slow WebSocket reader (it is closed beyond)"),
    "latency-metrics": ("on", str, "on: time each CoAP request for /metrics; off: no request histogram (store commits are timed either way)"),
}


class Options(usage.Options):
    """Command-line options of ``twistd tbcoap``."""

    optParameters = [[name, None, None, text if default is None else f"{text} [default: {default}]"]
                     for name, (default, _, text) in SETTINGS.items()]
    optParameters.append(["config", "c", None, "TOML file with the same keys (e.g. coap-port = 5683)"])
    optParameters.append(["worker", None, None, "(internal) run as worker N of a --workers node"])

    def __init__(self, plugins=()):
        super().__init__()
        self.extra_plugins = plugins
        self.plugin_options = []

    def opt_version(self):
        """Print tbcoap's version and exit"""
        import tbcoap

        print(f"tbcoap {tbcoap.__version__}")
        raise SystemExit(0)

    def opt_plugin_option(self, value):
        """NAME.KEY=VALUE: a setting of plugin NAME (repeatable; also [plugins.NAME] in the config file)"""
        self.plugin_options.append(value)

    def parseOptions(self, options=None):
        """As usage.Options; under twistd a bad option or value is one line on stderr and exit status 1."""
        self.raw_args = list(options) if options is not None else sys.argv[1:]
        try:
            super().parseOptions(options)
        except usage.UsageError as exc:
            if getattr(self, "parent", None) is None:  # embedded: the caller decides
                raise
            raise SystemExit(f"twistd tbcoap: {exc} (twistd tbcoap --help lists every option)") from None

    def postOptions(self):
        self.settings = resolve_settings(self)
        self.plugins = PluginManager()
        for plugin in self.extra_plugins:
            self.plugins.register(plugin, name=getattr(plugin, "name", None), source="code")
        try:
            given = collect(self.settings.pop("plugins-table"), self.plugin_options)
            alias_sync(given, self.settings.pop("sync"), self["sync"] is not None, self["config"])

            def configure(scheme, rules):  # before the store is built: its factory reads its plugin's settings
                self.plugins.configure(scheme, rules, given)
                self.settings["plugins"] = {name: self.plugins.config_for(name) for name in self.plugins.names()}

            self.choices = choose(self.settings, self.plugins, configure)
        except (ChoiceError, SettingError) as exc:
            raise usage.UsageError(str(exc)) from None
        self.settings["worker"] = _worker_number(self["worker"])
        self.settings["worker-args"] = worker_args(self.raw_args)
        twistd = getattr(self, "parent", None)
        if twistd is not None:
            _choose_pidfile(twistd, self.settings)


def _worker_number(value) -> int:
    """0 for the first node (or a node without workers), N for worker N."""
    if value is None:
        return 0
    if not value.isdigit() or int(value) < 1:
        raise usage.UsageError("--worker is internal: the worker's number, from 1")
    return int(value)


def _choose_pidfile(twistd, settings):
    """twistd's pidfile, unless ``--pidfile`` was given: none in the foreground (``-n``, as under a
    supervisor), ``<data-dir>/twistd.pid`` for a daemon, so several nodes can run from one folder."""
    args = sys.argv[1:]
    ours = args.index("tbcoap") if "tbcoap" in args else len(args)
    if any(arg == "--pidfile" or arg.startswith("--pidfile=") for arg in args[:ours]):
        return
    if twistd.get("nodaemon"):
        twistd["pidfile"] = ""
    else:
        datadir.ensure(settings["data-dir"])
        twistd["pidfile"] = os.path.join(os.path.abspath(settings["data-dir"]), "twistd.pid")


WORKER_OWN = ("--coap-port", "--coap-interface", "--coaps-port", "--coaps-interface", "--http-port", "--workers",
              "--admin-key", "--admin-key-file", "--worker")


def worker_args(args):
    """The command line of a worker: the node's own, less what the first node decides for it
    (ports, interface, the key, which it gets in its environment)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.partition("=")[0]
        if name in WORKER_OWN:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def alias_sync(given, sync, from_command_line, config_path):
    """``--sync`` (or ``sync`` in the config file) is the sqlite plugin's setting ``sync``: put it in
    ``given`` (collect's ``{plugin: {key: Given}}``) unless ``--plugin-option sqlite.sync`` or (for
    the config file's key) ``[plugins.sqlite] sync`` gives it already."""
    ours = given.get("sqlite", {}).get("sync")
    if sync is not None and (ours is None or (from_command_line and not ours.is_text)):
        origin = "--sync" if from_command_line else f"sync in {config_path}"
        given.setdefault("sqlite", {})["sync"] = Given(sync, origin, is_text=from_command_line)


def resolve_settings(given) -> dict:
    """Defaults, then the config file, then the options given; validated and typed."""
    settings = {name: default for name, (default, _, _) in SETTINGS.items()}
    settings["plugins-table"] = None
    config_path = given.get("config")
    if config_path:
        try:
            with open(config_path, "rb") as f:
                config = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise usage.UsageError(f"cannot read config file {config_path}: {exc}")
        settings["plugins-table"] = config.pop("plugins", None)
        unknown = sorted(set(config) - set(SETTINGS))
        if unknown:
            raise usage.UsageError(f"unknown key(s) in {config_path}: {', '.join(unknown)}")
        for name, value in config.items():
            convert = SETTINGS[name][1]
            if not _right_type(value, convert):
                raise usage.UsageError(f"{name} in {config_path}: expected {TYPE_WORDS[convert]}, got {value!r}")
        settings.update(config)
    settings.update({name: value for name, value in given.items() if name in SETTINGS and value is not None})
    for name, (_, convert, _) in SETTINGS.items():
        value = settings[name]
        if value is None or (not isinstance(value, str) and convert not in (size, duration)) or convert is str:
            continue  # a config file value of the right type, or text
        try:
            settings[name] = convert(value)
        except (TypeError, ValueError):
            raise usage.UsageError(f"--{name}: expected {TYPE_WORDS[convert]}, got {value!r}")
    _validate(settings)
    if settings["store"] is None:
        settings["store"] = "sqlite://"  # the sqlite plugin's own file: <data-dir>/tbcoap.sqlite3 by default
    settings["admin-key-source"] = None if not settings["admin-key"] else "--admin-key" \
        if given.get("admin-key") else f"admin-key in {config_path}"
    if not settings["admin-key"] and os.environ.get("TBCOAP_ADMIN_KEY"):
        settings["admin-key"], settings["admin-key-source"] = os.environ["TBCOAP_ADMIN_KEY"], "$TBCOAP_ADMIN_KEY"
    return settings


TYPE_WORDS = {int: "an integer", float: "a number", str: "text", size: "a size (65536, 64KiB, 1MiB)",
              duration: "a duration (90d, 12h, 3600s or seconds)"}


def _right_type(value, convert):
    """A config file value (not text from the command line) of the setting's own type."""
    if isinstance(value, bool):
        return False
    if convert in (size, duration):
        return isinstance(value, (int, str))
    return isinstance(value, int) if convert is int else isinstance(value, (int, float)) if convert is float \
        else isinstance(value, str)


def _validate(settings):
    for name in ("coap-port", "http-port", "coaps-port"):
        if not 0 <= settings[name] <= 65535:
            raise usage.UsageError(f"--{name} must be 0 to 65535")
    if settings["max-body"] < 1:
        raise usage.UsageError("--max-body must be positive")
    if not 0 < settings["piggyback-timeout"] <= 60_000:
        raise usage.UsageError("--piggyback-timeout must be 1 to 60000 ms")
    for name in ("rule-timeout", "ack-timeout", "write-timeout"):
        if not 0 < settings[name] <= 3600:
            raise usage.UsageError(f"--{name} must be more than 0 and at most 3600 seconds")
    if settings["claim-duration"] < 1:
        raise usage.UsageError("--claim-duration must be positive")
    if not 0 <= settings["max-retransmit"] <= 20:
        raise usage.UsageError("--max-retransmit must be 0 to 20")
    for name in ("max-device-observations", "max-peer-observations", "max-observations", "dedup-entries",
                 "answer-cache", "notification-queue", "max-request-keys", "max-key-length", "max-value-size",
                 "max-rest-body", "max-ota-size", "ws-max-connections-per-key", "ws-max-subscriptions-per-connection",
                 "ws-max-subscriptions", "ws-max-queue", "device-keys-cache", "coaps-receive-buffer",
                 "inactivity-timeout", "max-queued-rpcs", "max-held-attributes"):
        if settings[name] < 1:
            raise usage.UsageError(f"--{name} must be positive")
    for name in ("dtls-max-sessions", "dtls-max-handshakes"):
        if settings[name] < 1:
            raise usage.UsageError(f"--{name} must be positive")
    for name, size in (("dtls-handshake-rate", 3), ("dtls-session-rate", 2)):
        try:
            parse_counts(settings[name], size)
        except ValueError as exc:
            raise usage.UsageError(f"--{name}: {exc}")
    try:
        parse_device_keys(settings["max-device-keys"])
    except ValueError as exc:
        raise usage.UsageError(f"--max-device-keys: {exc}")
    if settings["ts-ttl"] < 0:
        raise usage.UsageError("--ts-ttl must be 0 (keep) or a positive duration")
    if settings["latency-metrics"] not in ("on", "off"):
        raise usage.UsageError("--latency-metrics must be on or off")
    if settings["metrics-key"] is not None and len(settings["metrics-key"]) < 16:
        raise usage.UsageError("--metrics-key must be at least 16 characters")
    if not 1 <= settings["workers"] <= 256:
        raise usage.UsageError("--workers must be 1 to 256")
    if settings["max-rest-body"] < MIN_REST_BODY:
        raise usage.UsageError(f"--max-rest-body must be at least {MIN_REST_BODY} bytes")
    for name in ("device-rate-limit", "peer-rate-limit", "provision-rate-limit"):
        if settings[name] and settings[name] != "off":
            try:
                parse_rate_limit(settings[name])
            except ValueError as exc:
                raise usage.UsageError(f"--{name}: {exc}")


def makeService(options):
    """twistd's entry point: the service tree for parsed ``Options``.

    The process is ours here, so the garbage collector is tuned for a server
    (embedding applications keep their own settings): everything loaded so
    far is frozen out of collections, and collections run less often.  At
    the default thresholds, full collections of a busy heap cost more time
    than all request handling (docs/performance.md).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return TbcoapService(options.settings, options.plugins, options.choices, exit_on_error=True)


def service_from_args(args, plugins=(), **overrides):
    """Embedding: a TbcoapService from command-line style ``args`` and keyword overrides.

    ``plugins`` are registered in code before the options are checked (a
    plugin's ``name`` attribute, if any, is its name for ``--rules``).
    """
    args = list(args)
    for name, value in overrides.items():
        for one in value if isinstance(value, (list, tuple)) else [value]:  # plugin_option=[...] repeats
            args += [f"--{name.replace('_', '-')}", str(one)]
    options = Options(plugins)
    options.parseOptions(args)
    return TbcoapService(options.settings, options.plugins, options.choices)
