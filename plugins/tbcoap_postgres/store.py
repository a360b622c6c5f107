"""PostgresStore: the IStore on PostgreSQL, for one node or several sharing one database.

Writes are jobs for the GroupCommitWriter (one thread, one connection, one transaction per
batch).  Reads run in a small thread pool, each thread with its own read-only connection and a
REPEATABLE READ transaction per call (a consistent view; MVCC, so reads never wait for writes).
A connection found broken is replaced; while the server cannot be reached, calls fail at once
with StoreUnavailable naming the cause.  Devices, profiles, customers, RPCs and claims are in
``records.py``, time series in ``telemetry.py``.
"""

from __future__ import annotations

import threading

from twisted.internet import defer, task, threads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from tbcoap.errors import NotSupported, StoreUnavailable
from tbcoap.interfaces import IStore
from tbcoap.latency import LatencyHistogram
from tbcoap.models import now_ms
from tbcoap.storekit import STALLED_WRITE

from . import partitions, schema
from .bus import PostgresBus
from .connection import connect, is_unavailable, translate
from .management import ManagementMixin
from .ota import OtaCalls
from .records import RecordsMixin
from .rollups import RollupMixin
from .telemetry import TelemetryMixin
from .writer import GroupCommitWriter

log = Logger()
AHEAD_MONTHS = 2  # partitions made ahead of time: this month and the next ones
MAINTENANCE_EVERY = 3600.0  # seconds between passes that make the coming months' partitions


@implementer(IStore)
class PostgresStore(RecordsMixin, TelemetryMixin, RollupMixin, ManagementMixin, OtaCalls):
    """Devices, credentials, profiles, telemetry, attributes, RPCs, customers and claim requests
    in the tables of one schema of a PostgreSQL database."""

    name = "postgresql"
    backup_type = None  # PostgreSQL keeps its own backups: backup() fails with NotSupported

    def __init__(self, url, read_threads=4, max_queue=10000, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.reactor = reactor
        self._read_threads = read_threads
        self._max_queue = max_queue
        self._state = "new"  # -> opening -> open -> closing -> closed
        self._writer = None
        self.commit_latency = LatencyHistogram()  # seconds per group commit (the writer observes it)
        self._pool = None
        self._local = threading.local()
        self._readers = []
        self._readers_lock = threading.Lock()
        self._months = set()  # months whose partitions exist (as far as this node knows)
        self._bus = None
        self._trigger = None
        self._opening = None
        self._closing = None
        self._maintenance = None
        self._reads = 0
        self._failed_reads = 0

    # -- life cycle ----------------------------------------------------------------------

    def open(self):
        if self._state == "open":
            return defer.succeed(None)
        if self._state != "new":
            return defer.fail(StoreUnavailable(f"postgresql store is {self._state}"))
        self._state = "opening"
        self._writer = GroupCommitWriter(self.reactor, self._connect_writer, self.url, max_queue=self._max_queue,
                                         commit_latency=self.commit_latency)
        self._writer.prepare = self._prepare
        d = self._writer.start(self._setup)
        self._opening = d.addCallbacks(self._opened, self._open_failed)
        return self._opening

    def _setup(self, conn):
        conn.autocommit = True
        try:
            schema.migrate(conn, self.url.schema)
            schema.ensure_default_profile(conn)
            self._months = partitions.existing(conn)
            self._make_ahead(conn)
        finally:
            conn.autocommit = False

    def _make_ahead(self, conn):
        """This month's partition and the next ones (``conn`` outside a transaction)."""
        month = partitions.month_of(now_ms())
        for _ in range(AHEAD_MONTHS + 1):
            if month is None:
                break
            if month not in self._months:
                partitions.create(conn, month)
                self._months = self._months | {month}  # (a new set: other threads may be reading it)
            month = partitions.next_month(*month)

    def _opened(self, _):
        self._pool = ThreadPool(0, self._read_threads, name="tbcoap-postgres-read")
        self._pool.start()
        self._state = "open"
        self._trigger = self.reactor.addSystemEventTrigger("during", "shutdown", self._on_shutdown)
        self._maintenance = task.LoopingCall(self._maintain_ahead)
        self._maintenance.clock = self.reactor
        self._maintenance.start(MAINTENANCE_EVERY, now=False)

    def _open_failed(self, failure):
        self._writer = None
        self._state = "new"
        error = failure.value
        if isinstance(error, StoreUnavailable):
            raise StoreUnavailable(f"cannot use {self.url.shown()}: {error}")
        return failure

    def close(self):
        if self._state == "opening":  # close once the open has ended, whichever way
            done = defer.Deferred()
            self._opening.addBoth(lambda result: (self.close().chainDeferred(done), result)[1])
            return done
        if self._state in ("new", "closed"):
            self._state = "closed"
            return defer.succeed(None)
        if self._state != "closing":
            self._state = "closing"
            if self._trigger is not None:
                self.reactor.removeSystemEventTrigger(self._trigger)
                self._trigger = None
            if self._maintenance is not None and self._maintenance.running:
                self._maintenance.stop()
            self._closing = self._writer.stop().addBoth(self._closed)
        done = defer.Deferred()  # one for each caller, all fired when the store is closed
        self._closing.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    def _closed(self, _):
        self._pool.stop()  # runs the reads already queued, then joins the threads
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._state = "closed"

    def _on_shutdown(self):
        self._trigger = None
        return self.close()

    def check(self):
        if self._state != "open":
            return defer.fail(StoreUnavailable(f"postgresql store is {self._state.replace('new', 'not open')}"))
        if self._writer.down is not None:
            return defer.fail(StoreUnavailable(self._writer.down))
        if not self._writer.alive():
            return defer.fail(StoreUnavailable("postgresql writer thread is not running"))
        waited = self._writer.oldest_wait()
        if waited > STALLED_WRITE:
            return defer.fail(StoreUnavailable(f"postgresql writes have waited {waited:.1f} s"))
        return self.run_read(lambda conn: conn.execute("SELECT 1").fetchone() and None)

    def backup(self, path):
        return defer.fail(NotSupported(
            "the postgresql store is backed up by PostgreSQL itself: pg_dump (a logical copy of the schema "
            f"{self.url.schema}) or pg_basebackup (the whole server, for point-in-time recovery)"))

    def stats(self):
        w = self._writer
        return {
            "queueDepth": w.pending if w else 0,
            "commits": w.commits if w else 0,
            "writes": w.writes if w else 0,
            "failedWrites": w.failed if w else 0,
            "largestBatch": w.largest_batch if w else 0,
            "reads": self._reads,
            "failedReads": self._failed_reads,
            "reconnects": w.reconnects if w else 0,
            "timedOutWrites": w.timeouts if w else 0,
            "retriedBatches": w.retried if w else 0,
            "partitions": len(self._months),
            "oldestWriteWait": round(w.oldest_wait(), 3) if w else 0.0,
        }

    def bus(self):
        """The bus between the nodes sharing this database (LISTEN/NOTIFY as a wake-up)."""
        if self._bus is None:
            self._bus = PostgresBus(self)
        return self._bus

    # -- connections (in the writer and reader threads) ------------------------------------------

    def _connect_writer(self):
        return connect(self.url)

    def _reader(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.url, read_only=True)
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _drop_reader(self, conn):
        with self._readers_lock:
            if conn in self._readers:
                self._readers.remove(conn)
        self._local.conn = None
        conn.close()

    # -- running jobs --------------------------------------------------------------------------

    def _unavailable(self):
        return defer.fail(StoreUnavailable(f"postgresql store is {self._state.replace('new', 'not open')}"))

    def run_write(self, job):
        """Run ``job(conn)`` in the next group commit; fires with its result after the commit."""
        if self._state != "open":
            return self._unavailable()
        return self._writer.submit(job)

    def run_read(self, fn, *args):
        """Run ``fn(conn, *args)`` on a read-only connection of the pool; fires with its result."""
        if self._state != "open":
            return self._unavailable()
        if self._writer.down is not None:
            return defer.fail(StoreUnavailable(self._writer.down))
        self._reads += 1
        d = deferToThreadPool(self.reactor, self._pool, self._in_reader, fn, args)
        d.addErrback(self._read_failed)
        return d

    def _read_failed(self, failure):
        self._failed_reads += 1
        return failure

    def _in_reader(self, fn, args):
        for attempt in (1, 2):
            try:
                conn = self._reader()
            except StoreUnavailable:
                raise
            try:
                try:
                    return fn(conn, *args)
                finally:
                    if not conn.broken:
                        conn.rollback()
            except Exception as exc:
                if is_unavailable(exc) and conn.broken:
                    self._drop_reader(conn)
                    if attempt == 1:
                        continue  # a connection broken while idle (a server restart): once more
                error = translate(exc, self.url)
                if error is exc:
                    raise
                raise error from None

    def _prepare(self, conn, batch, attempt):
        """Before a batch (writer thread, outside its transaction): the partitions its points need
        (known ones are looked up again when a batch runs again: another node may have dropped one)."""
        if attempt > 1:
            self._months = partitions.existing(conn)
            conn.rollback()
        needed = set()
        for entry in batch:
            rows = getattr(entry.job, "rows", None)
            if rows is not None:
                needed |= partitions.months_of(ts for ts, *_ in rows)
        missing = needed - self._months
        if not missing:
            return
        conn.autocommit = True
        try:
            for month in sorted(missing):
                partitions.create(conn, month)
                self._months = self._months | {month}
        finally:
            conn.autocommit = False

    def _maintain(self, fn, *args):
        """Run ``fn(conn, *args)`` in a thread on a short-lived autocommit connection (partition drops)."""
        if self._state != "open":
            return self._unavailable()

        def run():
            conn = connect(self.url, autocommit=True)
            try:
                return fn(conn, *args)
            except Exception as exc:
                raise translate(exc, self.url) from None
            finally:
                conn.close()

        return threads.deferToThread(run)

    def _maintain_ahead(self):
        """Hourly: the coming months' partitions (a failure is tried again in an hour)."""
        d = self._maintain(lambda conn: (self._make_ahead(conn), None)[1])
        d.addErrback(lambda failure: log.warn("postgresql partitions ahead not made: {error}",
                                              error=failure.getErrorMessage()))
        return d
