"""Database: the life cycle and the threads of one SQLite file in WAL mode.

Opening starts the GroupCommitWriter (one thread and connection for every write, which also sets
the file up: WAL, ``synchronous``, schema migrations), then a small ThreadPool of readers (each
thread with its own read-only connection, every read in a transaction for a consistent view) and
the Checkpointer.  Closing answers every queued write first.  The store (store.py) hands jobs to
``write`` and ``read`` and knows nothing of threads.
"""

import os
import sqlite3
import threading
import time

from twisted.internet import defer, threads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from tbcoap.errors import StoreUnavailable
from tbcoap.latency import LatencyHistogram
from tbcoap.storekit import STALLED_WRITE

from . import schema
from .writer import Checkpointer, GroupCommitWriter, translate

SYNC_MODES = ("normal", "full")  # PRAGMA synchronous: a commit survives a killed process / a power loss
WAL_SAFETY_PAGES = 16384  # the writer checkpoints itself only past this many WAL pages (64 MiB)


def check_sync(value):
    """ValueError unless ``value`` is one of SYNC_MODES (the ``sync`` setting)."""
    if value not in SYNC_MODES:
        raise ValueError(f"sync must be 'normal' or 'full', not {value!r}")


def private_files(path):
    """The database file (created if missing) and its WAL and shared-memory files: 0600, whatever
    the umask (SQLite gives new -wal and -shm files the database file's mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


def fold(text):
    """Case folding for searches that SQLite's LIKE cannot fold (non-ASCII): SQL's ``tbcoap_fold``."""
    return text.casefold() if isinstance(text, str) else text


class Database:
    """One SQLite file, its writer, readers and checkpointer; ``write(job)`` and ``read(fn, *args)``
    run ``job(conn)`` / ``fn(conn, *args)`` in those threads and fire with the result."""

    def __init__(self, path, sync="normal", busy_timeout=5.0, read_threads=4, max_queue=10000, reactor=None):
        check_sync(sync)
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.commit_latency = LatencyHistogram()  # seconds per group commit (read by /metrics)
        self.writer = None  # the GroupCommitWriter, once opening
        self.on_rollback = []  # called in the writer thread after any rollback (memory of rows to forget)
        self._sync = sync
        self._busy_timeout = busy_timeout
        self._read_threads = read_threads
        self._max_queue = max_queue
        self._reactor = reactor
        self._state = "new"  # -> opening -> open -> closing -> closed
        self._pool = None
        self._checkpointer = None
        self._local = threading.local()
        self._readers = []
        self._readers_lock = threading.Lock()
        self._close_waiters = []
        self._trigger = None
        self._reads = 0

    # -- life cycle ----------------------------------------------------------

    def open(self):
        """Create or migrate the file and start the threads; fires when ready."""
        if self._state == "open":
            return defer.succeed(None)
        if self._state != "new":
            return defer.fail(StoreUnavailable(f"sqlite store is {self._state}"))
        self._state = "opening"
        self.writer = GroupCommitWriter(self._reactor, self._connect_writer, commit_latency=self.commit_latency)
        self.writer.on_rollback = self.on_rollback
        return self.writer.start(self._setup, self._finish).addCallbacks(self._opened, self._open_failed)

    def _opened(self, _):
        self._pool = ThreadPool(0, self._read_threads, name="tbcoap-sqlite-read")
        self._pool.start()
        self._checkpointer = Checkpointer(self._connect)
        self._checkpointer.start()
        self._state = "open"
        # a safety net for owners that never call close(): "during" runs after every
        # "before shutdown" trigger (a Service's stopService) has finished with the store
        self._trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._on_shutdown)
        if self._close_waiters:
            self._begin_close()

    def _open_failed(self, failure):
        self.writer = None
        self._state = "closed" if self._close_waiters else "new"
        self._fire_close_waiters()
        return failure

    def close(self):
        """Commit and answer every queued write, then stop the threads; fires when done."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        if self._state == "open":
            self._begin_close()
        return d

    def _on_shutdown(self):
        self._trigger = None
        return self.close()

    def _begin_close(self):
        self._state = "closing"
        if self._trigger is not None:
            self._reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        self.writer.stop().addBoth(lambda _: self._fire_close_waiters())

    def _fire_close_waiters(self):
        if self._state == "closing":
            self._state = "closed"
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def check(self):
        """None if a read works now and no write has waited too long; StoreUnavailable if not."""
        if self.writer is not None and self._state == "open":
            if not self.writer.alive():
                return defer.fail(StoreUnavailable("sqlite writer thread is not running"))
            waited = self.writer.oldest_wait()
            if waited > STALLED_WRITE:
                return defer.fail(StoreUnavailable(f"sqlite writes have waited {waited:.1f} s (database locked?)"))

        def read(conn):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

        return self.read(read)

    def backup(self, path):
        """SQLite's online backup of the whole database into the new file ``path`` (0600), in one
        step: one read transaction, so the copy is the database as it was when the step began,
        every commit acknowledged before it included.  Writers go on meanwhile (WAL)."""
        if self._state != "open":
            return defer.fail(StoreUnavailable("the sqlite store is not open"))

        def copy():
            source = self._connect()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                target = sqlite3.connect(path)
                try:
                    source.backup(target)
                finally:
                    target.close()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"backup failed: {exc}") from exc
            finally:
                source.close()
            return os.path.getsize(path)

        return threads.deferToThread(copy)

    def stats(self):
        w = self.writer
        return {
            "queueDepth": w.pending if w else 0,
            "commits": w.commits if w else 0,
            "writes": w.writes if w else 0,
            "failedWrites": w.failed if w else 0,
            "largestBatch": w.largest_batch if w else 0,
            "reads": self._reads,
            "checkpoints": self._checkpointer.checkpoints if self._checkpointer else 0,
            "oldestWriteWait": round(w.oldest_wait(), 3) if w else 0.0,
        }

    # -- connections (called in the writer and reader threads) ---------------

    def _connect(self):
        try:
            return sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc

    def _connect_writer(self):
        try:
            private_files(self.path)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path}: {exc}") from exc
        return self._connect()

    def _setup(self, conn):
        # Switching to WAL does not wait on the busy handler: retry it by hand
        # (two processes creating one new file meet here).
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        conn.execute(f"PRAGMA synchronous = {self._sync.upper()}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_SAFETY_PAGES}")
        schema.migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        schema.ensure_default_profile(conn)
        conn.execute("COMMIT")

    def _finish(self, conn):
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._pool.stop()  # runs the reads already queued, then joins the threads
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        try:
            conn.execute("PRAGMA optimize")
        finally:
            conn.close()

    def _reader(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            conn.create_function("tbcoap_fold", 1, fold, deterministic=True)
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    # -- running jobs ----------------------------------------------------------

    def _unavailable(self):
        return defer.fail(StoreUnavailable(f"sqlite store is {self._state.replace('new', 'not open')}"))

    def write(self, job):
        """Queue ``job(conn)`` for the next group commit; fires with its result after the commit."""
        if self._state != "open":
            return self._unavailable()
        if self.writer.pending >= self._max_queue:
            return defer.fail(StoreUnavailable("sqlite write queue is full"))
        return self.writer.submit(job)

    def read(self, fn, *args):
        """Run ``fn(conn, *args)`` in a reader thread, in one read transaction; fires with its result."""
        if self._state != "open":
            return self._unavailable()
        self._reads += 1
        return deferToThreadPool(self._reactor, self._pool, self._in_reader, fn, args)

    def _in_reader(self, fn, args):
        try:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except Exception as exc:
            error = translate(exc)
            if error is exc:
                raise
            raise error from exc
