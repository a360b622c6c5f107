"""Redis for tests: a blocking RESP client (setup and clean-up only) and private ``redis-server``
processes the tests start, kill and restart on free ports, never the shared one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from urllib.parse import urlsplit

from tests.conftest import require, require_tool


class Resp:
    """A minimal blocking Redis client: ``call("SET", "k", "v")``."""

    def __init__(self, host, port, db=0, timeout=5.0, password=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        if password is not None:
            self.call("AUTH", password)
        if db:
            self.call("SELECT", db)

    @classmethod
    def for_url(cls, url):
        parts = urlsplit(url)
        return cls(parts.hostname, parts.port or 6379, int(parts.path.strip("/") or 0))

    def call(self, *args):
        data = b"*%d\r\n" % len(args)
        for arg in args:
            arg = arg if isinstance(arg, bytes) else str(arg).encode()
            data += b"$%d\r\n%s\r\n" % (len(arg), arg)
        self.sock.sendall(data)
        return self._reply()

    def _reply(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if rest == b"-1":
                return None
            value = self.file.read(int(rest) + 2)[:-2]
            return value.decode("utf-8", "replace")
        if kind == b"*":
            return None if rest == b"-1" else [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"bad reply {line!r}")

    def delete_prefix(self, prefix):
        """Delete every key under ``prefix:`` (tests only: this walks the keyspace)."""
        cursor = "0"
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", 1000)
            if keys:
                self.call("DEL", *keys)
            if cursor == "0":
                return

    def close(self):
        self.file.close()
        self.sock.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free port, with its data in ``folder``.

    ``appendfsync always``: what Redis acknowledged survives its being killed.  With ``password``
    it wants that password (``requirepass``).
    """

    def __init__(self, folder, *extra, tls=None, password=None):
        self.binary = require_tool("redis-server", "install Redis (Debian: apt-get install redis-server)")
        self.folder = folder
        self.port = free_port()
        self.extra = extra
        self.tls = tls  # (cert file, key file, CA file): TLS only, on self.port
        self.password = password
        self.proc = None
        os.makedirs(folder, exist_ok=True)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        ports = ["--port", str(self.port)]
        if self.tls:
            cert, key, ca = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            [self.binary, *ports, "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile",
             os.path.join(self.folder, "redis.log"),
             *(["--requirepass", self.password] if self.password is not None else []), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        if self.tls:  # no plain port to PING: wait for the TLS port to accept
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.05)
            raise AssertionError(f"redis-server (TLS) on {self.port} did not start")
        while time.monotonic() < deadline:
            try:
                client = Resp("127.0.0.1", self.port, timeout=1, password=self.password)
                if client.call("PING") == "PONG":
                    client.close()
                    return
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"redis-server on {self.port} did not start")

    def client(self):
        return Resp("127.0.0.1", self.port, password=self.password)

    def kill(self):
        """SIGKILL: what it had not written to its append-only file is gone."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class PrivateSentinel:
    """A Redis Sentinel watching a primary as service ``mymaster``, deciding alone (quorum 1)."""

    def __init__(self, folder, primary_port):
        self.binary = require_tool("redis-server", "install Redis (Debian: apt-get install redis-server)")
        self.folder = folder
        self.port = free_port()
        os.makedirs(folder, exist_ok=True)
        self.config = os.path.join(folder, "sentinel.conf")
        with open(self.config, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {primary_port} 1\n"
                    "sentinel down-after-milliseconds mymaster 500\n"
                    "sentinel failover-timeout mymaster 3000\n"
                    "sentinel parallel-syncs mymaster 1\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, self.config, "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client = Resp("127.0.0.1", self.port, timeout=1)
                if client.call("PING") == "PONG":
                    client.close()
                    return self
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)
        raise AssertionError("redis sentinel did not start")

    def primary(self):
        client = Resp("127.0.0.1", self.port)
        try:
            host, port = client.call("SENTINEL", "get-master-addr-by-name", "mymaster")
            return host, int(port)
        finally:
            client.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def have_redis_server():
    return shutil.which("redis-server") is not None


def require_redis_server():
    require(have_redis_server(), "redis-server is not installed",
            "install Redis (Debian: apt-get install redis-server) to run the Redis fault tests")
