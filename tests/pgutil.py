"""PostgreSQL for tests: a database of the test's own on the shared server (dropped afterwards), and
private PostgreSQL servers the fault tests start, kill and restart on free ports, never the shared one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

from tests.conftest import require, require_postgres

PG_BIN = os.environ.get("TBCOAP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin")


def with_database(url, dbname, query=""):
    """``url`` naming database ``dbname`` (and the query, e.g. ``schema=x&timeout=2``)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", query, ""))


class TestDatabase:
    """A database with a unique name on the test PostgreSQL; ``drop()`` removes it."""

    __test__ = False

    def __init__(self, prefix="tbcoap_test"):
        import psycopg

        self.server = require_postgres()
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def url(self, query=""):
        return with_database(self.server, self.name, query)

    def connect(self, schema="tbcoap"):
        """A plain psycopg connection to the database, in ``schema`` (for looking at the tables)."""
        import psycopg

        conn = psycopg.connect(self.url(), autocommit=True)
        conn.execute(f"SET search_path TO {schema}")
        return conn

    def drop(self):
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_pg_server():
    require(os.path.exists(os.path.join(PG_BIN, "initdb")), f"no PostgreSQL server programs in {PG_BIN}",
            "install PostgreSQL 15 (Debian: apt-get install postgresql-15) to run the PostgreSQL fault tests, or "
            "point TBCOAP_TEST_PG_BIN at its bin folder")


class PrivateCluster:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, trust auth for user
    ``postgres``, a free port on 127.0.0.1), run as the ``postgres`` OS user when the tests run as root."""

    def __init__(self):
        require_pg_server()
        self.folder = tempfile.mkdtemp(prefix="tbcoap-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--locale=C.UTF-8")

    def _run(self, program, *args, check=True):
        command = [os.path.join(PG_BIN, program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    @property
    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=60"
                   " -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.folder, "server.log"), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def require_passwords(self):
        """From now on TCP connections need a password (scram-sha-256); the socket stays trusted."""
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba, "w") as f:
            f.write("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")
        self._run("pg_ctl", "-D", self.data, "reload")
        time.sleep(0.5)

    def kill(self):
        """Stop at once, as a crash would (``-m immediate``: no checkpoint; recovery at the next start)."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)

    def remove(self):
        self.stop()
        pid_file = os.path.join(self.data, "postmaster.pid")
        if os.path.exists(pid_file):  # still running: end it
            with open(pid_file) as f:
                os.kill(int(f.readline()), signal.SIGKILL)
            time.sleep(0.5)
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.folder, "server.log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""
