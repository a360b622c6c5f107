"""Shared fixtures: an in-process node on real sockets, a raw CoAP client, a REST client,
and a twistd subprocess for the tests that need a real process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from tbcoap.service import service_from_args
from tests.coapclient import open_client

ADMIN_KEY = "test-admin-key"
REQUIRE_ALL = os.environ.get("TBCOAP_REQUIRE_ALL") == "1"


def require(condition, why, how):
    """Skip (or fail under TBCOAP_REQUIRE_ALL=1, as in CI) when a real peer is missing."""
    if not condition:
        message = f"{why}; {how}"
        if REQUIRE_ALL:
            pytest.fail(f"TBCOAP_REQUIRE_ALL=1: {message}")
        pytest.skip(message)


PROJECT_TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".clients",
                             "node_modules", ".bin")


REDIS_URL = os.environ.get("TBCOAP_TEST_REDIS", "redis://127.0.0.1:6379/9")
REDIS_HOW = ("start one with: redis-server --port 6379 --save '' --appendonly no "
             "(or point TBCOAP_TEST_REDIS at one, e.g. redis://host:6379/9)")


def _reachable(check, url, tries=3):
    """``check(url)`` passing once in ``tries`` (a busy machine may miss one short timeout); a
    passing URL is not asked again in this test session."""
    if url in _REACHED:
        return True
    for attempt in range(tries):
        if check(url):
            _REACHED.add(url)
            return True
        if attempt + 1 < tries:
            time.sleep(0.5)
    return False


_REACHED = set()


def _redis_pings(url):
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_reachable(url=None) -> bool:
    """True if the test Redis answers PING."""
    return _reachable(_redis_pings, url or REDIS_URL)


def require_redis():
    """The test Redis's URL, or skip (fail under TBCOAP_REQUIRE_ALL=1) with how to start one."""
    require(redis_reachable(), f"no Redis at {REDIS_URL}", REDIS_HOW)
    return REDIS_URL


POSTGRES_URL = os.environ.get("TBCOAP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
POSTGRES_HOW = ("install and start PostgreSQL 15 (Debian: apt-get install postgresql; trust or a password for user "
                "postgres on 127.0.0.1:5432), or point TBCOAP_TEST_POSTGRES at a server whose user may create "
                "databases, e.g. postgresql://user:password@host:5432/postgres")


def _postgres_connects(url):
    try:
        import psycopg
    except ImportError:
        return False
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def postgres_reachable(url=None) -> bool:
    """True if the test PostgreSQL accepts a connection."""
    return _reachable(_postgres_connects, url or POSTGRES_URL)


def require_postgres():
    """The test PostgreSQL's URL (a database tests may create others from), or skip (fail under
    TBCOAP_REQUIRE_ALL=1) with how to get one."""
    require(postgres_reachable(), f"no PostgreSQL at {POSTGRES_URL}", POSTGRES_HOW)
    return POSTGRES_URL


def require_tool(name, how):
    """The path of an external program (on PATH, or installed into the project's .clients/ by
    tests/install-clients.sh), or skip/fail with how to get it."""
    path = shutil.which(name, path=PROJECT_TOOLS) or shutil.which(name)
    require(path is not None, f"{name} is not installed", how)
    return path


class Rest:
    """treq with the admin key: ``status, body = await rest.get(path)``."""

    def __init__(self, base, key=ADMIN_KEY):
        self.base = base
        self.key = key

    async def call(self, method, path, body=None, key=None, raw=None):
        headers = {}
        key = self.key if key is None else key
        if key:
            headers["X-Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await treq.request(method, self.base + path, data=data, headers=headers)
        content = await response.content()
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content
        return response.code, parsed

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest_twisted.async_yield_fixture
async def start_node(tmp_path):
    """Factory: ``await start_node(*extra_args)`` gives a started TbcoapService; all stop afterwards."""
    started = []

    async def start(*args, data_dir=None, plugins=()):
        # each node its own data directory unless the test says otherwise (one node per directory)
        data_dir = data_dir or tmp_path / ("data" if not started else f"data-{len(started)}")
        service = service_from_args(["--coap-port", "0", "--http-port", "0", "--coap-interface", "127.0.0.1",
                                     "--data-dir", str(data_dir),
                                     "--admin-key", ADMIN_KEY, *args], plugins)
        service.startService()
        started.append(service)
        await service.opened
        return service

    yield start
    for service in started:
        if service.running:
            await service.stopService()


@pytest_twisted.async_fixture
async def node(start_node):
    """A started TbcoapService on ephemeral ports with its store open."""
    return await start_node()


@pytest_twisted.async_yield_fixture
async def coap(node):
    """A raw CoAP client talking to the node."""
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    yield client
    await defer.maybeDeferred(client.port.stopListening)


@pytest.fixture
def rest(node):
    """A REST client with the admin key."""
    return Rest(f"http://127.0.0.1:{node.http_address[1]}")


@pytest_twisted.async_fixture
async def device(rest):
    """A device named "dev-1" with token "TOKEN-1"; returns its JSON."""
    status, body = await rest.post("/api/device?accessToken=TOKEN-1", {"name": "dev-1", "type": "default"})
    assert status == 200, body
    return body


# -- a real twistd process --------------------------------------------------

LISTEN = re.compile(r"(CoAP|HTTP) listening on (udp|tcp) (\S+):(\d+)")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class TwistdProcess:
    """``twistd -n tbcoap`` in a subprocess, with the ports it logged."""

    def __init__(self, data_dir, *args, env=None):
        self.data_dir = data_dir
        self.args = args
        self.env = env
        self.log_path = os.path.join(data_dir, "twistd.log")
        self.proc = None
        self.ports = {}

    def command(self):
        """The command line: test defaults (free ports, 127.0.0.1, the test admin key), then args."""
        command = [TWISTD, "-n", "--pidfile=", "tbcoap", "--data-dir", self.data_dir,
                   "--coap-interface", "127.0.0.1", "--admin-key", ADMIN_KEY, *self.args]
        if "--coap-port" not in self.args:
            command += ["--coap-port", "0"]
        if "--http-port" not in self.args:
            command += ["--http-port", "0"]
        return command

    def environment(self):
        return {**os.environ, **(self.env or {})}

    def start(self, timeout=20):
        os.makedirs(self.data_dir, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=os.path.dirname(self.log_path), env=self.environment())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = dict((m.group(1), int(m.group(4))) for m in LISTEN.finditer(self.read_log()))
            if len(found) == 2 and self._healthy(found["HTTP"]):
                self.ports = found
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"twistd exited {self.proc.returncode}:\n{self.read_log()}")
            time.sleep(0.05)
        raise AssertionError(f"twistd did not start:\n{self.read_log()}")

    @staticmethod
    def _healthy(port):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def read_log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def coap_address(self):
        return ("127.0.0.1", self.ports["CoAP"])

    @property
    def http_url(self):
        return f"http://127.0.0.1:{self.ports['HTTP']}"

    url = http_url

    @property
    def coap_port(self):
        return self.ports["CoAP"]

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ``twistd -n tbcoap`` process shared by a module's tests (admin key ADMIN_KEY)."""
    process = TwistdProcess(str(tmp_path_factory.mktemp("server"))).start(timeout=30)
    try:
        yield process
    finally:
        try:
            process.stop(signal.SIGTERM, timeout=15)
        except subprocess.TimeoutExpired:
            process.stop(signal.SIGKILL)


@pytest.fixture
def twistd(tmp_path):
    """Factory: ``twistd(*args)`` starts a server process; all are stopped afterwards."""
    started = []

    def start(*args, data_dir=None, env=None):
        process = TwistdProcess(str(data_dir or tmp_path / "data"), *args, env=env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


# what every test server needs: loopback CoAP and free ports
LOOPBACK_PORTS = ("--coap-interface", "127.0.0.1", "--coap-port", "0", "--http-port", "0")


class Server(TwistdProcess):
    """``twistd -n tbcoap`` with exactly the arguments given (``--admin-key`` only if asked).

    Each start gets its own log file, so a restart on the same data dir does
    not read the ports of the previous run.
    """

    def __init__(self, data_dir, *args, env=None, log_name="twistd.log", clean_env=True):
        super().__init__(str(data_dir), *args, env=env)
        self.log_path = os.path.join(os.path.dirname(str(data_dir)), log_name)
        self.clean_env = clean_env

    def command(self):
        return [TWISTD, "-n", "--pidfile=", "tbcoap", "--data-dir", self.data_dir, *self.args]

    def environment(self):
        env = dict(os.environ)
        if self.clean_env:
            env.pop("TBCOAP_ADMIN_KEY", None)
        env.update(self.env or {})
        return env


@pytest.fixture
def launch(tmp_path):
    """Factory: ``launch(*args, data_dir=.., log_name=.., env=..)``; every process is killed afterwards."""
    started = []

    def start(*args, data_dir=None, log_name=None, env=None, key=ADMIN_KEY):
        data_dir = data_dir or tmp_path / "data"
        args = (*LOOPBACK_PORTS, *(("--admin-key", key) if key else ()), *args)
        server = Server(data_dir, *args, env=env, log_name=log_name or f"run{len(started)}.log")
        started.append(server)
        return server.start()

    yield start
    for server in started:
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)
        if not server.log.closed:
            server.log.close()


# -- stores several nodes share ------------------------------------------------------------

SHARED_STORES = ("redis", "postgres")


@contextlib.contextmanager
def shared_store_url(kind, query="timeout=2"):
    """A store URL several nodes can share, with data of its own: a Redis prefix (its keys removed
    afterwards) or a PostgreSQL database (dropped afterwards)."""
    import uuid

    if kind == "redis":
        from tests.redisutil import Resp

        url = require_redis()
        prefix = f"shared-{uuid.uuid4().hex[:12]}"
        try:
            yield f"{url}?prefix={prefix}" + (f"&{query}" if query else "")
        finally:
            client = Resp.for_url(REDIS_URL)
            client.delete_prefix(prefix)
            client.close()
    else:
        from tests.pgutil import TestDatabase

        database = TestDatabase("tbcoap_shared")
        try:
            yield database.url(query)
        finally:
            database.drop()


@pytest.fixture(params=SHARED_STORES)
def shared_store(request):
    """A store URL for several nodes (each test runs on Redis and on PostgreSQL)."""
    with shared_store_url(request.param) as url:
        yield url
