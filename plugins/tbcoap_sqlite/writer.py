"""Group commit: one thread and one connection run every write.

Jobs are callables ``job(conn) -> result`` that only touch the connection.
The thread takes all pending jobs and runs them in one transaction; if one
of them fails, the transaction is rolled back and the batch run again with a
SAVEPOINT per job (so a failing job rolls back only itself).  After the
commit it answers all of them in a single ``reactor.callFromThread``: a job's
Deferred never fires before its commit.  The thread is woken once per
reactor iteration, not once per job, so a burst of requests shares a commit.

A job may also offer ``prepare()``, run in the thread before the transaction (a job whose
``prepare`` raises fails alone, the others commit), and ``run_together(conn, jobs)``, one call
for neighbouring jobs of its kind (ingest.py: the telemetry writes of a batch).
"""

import collections
import sqlite3
import threading
import time

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, StoreUnavailable
from tbcoap.latency import LatencyHistogram

MAX_BATCH = 1000

# UNIQUE constraint -> the domain error it means (the jobs check first; this
# only catches what another process may have written meanwhile).
_UNIQUE = {
    "devices.name": (DuplicateName, "a device with this name exists"),
    "device_profiles.name": (DuplicateName, "a device profile with this name exists"),
    "credentials.token": (DuplicateToken, "this access token is used by another device"),
    "device_profiles.provision_key": (BadRequest, "this provision key is used by another profile"),
    "rpcs.id": (BadRequest, "an RPC with this id exists"),
    "customers.key_digest": (BadRequest, "this API key is used by another customer"),
    "customers.id": (BadRequest, "a customer with this id exists"),
}


def is_unavailable(exc):
    """True for sqlite errors about the database itself (locked, I/O, full, corrupt)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
        exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.NotSupportedError)
    )


def translate(exc):
    """The tbcoap error for an exception raised by sqlite3 (others pass unchanged)."""
    if isinstance(exc, sqlite3.IntegrityError):
        for constraint, (cls, message) in _UNIQUE.items():
            if constraint in str(exc):
                return cls(message)
        return BadRequest(f"constraint failed: {exc}")
    if isinstance(exc, sqlite3.DataError):
        return BadRequest(f"value not storable: {exc}")
    if is_unavailable(exc) or isinstance(exc, sqlite3.InterfaceError):
        return StoreUnavailable(f"sqlite: {exc}")
    return exc


def _run_jobs(conn, jobs):
    """Each job's result, in order; neighbours sharing a ``run_together`` go in one call (None each)."""
    results, index, count = [], 0, len(jobs)
    while index < count:
        together = getattr(jobs[index], "run_together", None)
        if together is None:
            results.append(jobs[index](conn))
            index += 1
            continue
        end = index + 1
        while end < count and getattr(jobs[end], "run_together", None) is together:
            end += 1
        together(conn, jobs[index:end])
        results += [None] * (end - index)
        index = end
    return results


class GroupCommitWriter:
    """Owns the write connection; all methods but the thread body run in the reactor."""

    log = Logger()

    def __init__(self, reactor, connect, max_batch=MAX_BATCH, commit_latency=None):
        self._reactor = reactor
        self._connect = connect
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._jobs = collections.deque()
        self._stopping = False
        self._stopped = None
        self._thread = None
        self._wake_scheduled = False
        self.pending = 0  # submitted, not yet answered
        self._submitted = collections.deque()  # when each unanswered job was submitted (monotonic)
        self.commits = 0
        self.commit_latency = LatencyHistogram() if commit_latency is None else commit_latency  # s per commit
        self.writes = 0
        self.failed = 0
        self.largest_batch = 0
        self.on_rollback = []  # callables run (in the writer thread) after any rollback

    def start(self, setup, finish):
        """Connect and run ``setup(conn)`` in a new thread; fires when ready.

        ``finish(conn)`` runs in the thread after the last job at stop().
        """
        ready = defer.Deferred()
        self._thread = threading.Thread(
            target=self._run, args=(setup, finish, ready), name="tbcoap-sqlite-writer", daemon=True
        )
        self._thread.start()
        return ready

    def alive(self):
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def submit(self, job):
        """Queue ``job``; the Deferred fires with its result after the commit."""
        d = defer.Deferred()
        self._jobs.append((job, d))  # deque.append is atomic; the wake-up follows this iteration
        self._submitted.append(time.monotonic())
        self.pending += 1
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._reactor.callLater(0, self._wake)
        return d

    def _wake(self):
        self._wake_scheduled = False
        with self._cond:
            self._cond.notify()

    def stop(self):
        """Answer every queued job, run ``finish``, end the thread; call once."""
        self._stopped = defer.Deferred()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        return self._stopped.addBoth(self._join)

    def _join(self, result):
        self._thread.join()
        return result

    # -- in the writer thread ------------------------------------------------

    def _run(self, setup, finish, ready):
        try:
            conn = self._connect()
            try:
                setup(conn)
            except BaseException:
                conn.close()
                raise
        except Exception as exc:
            self._reactor.callFromThread(ready.errback, Failure(translate(exc)))
            return
        self._reactor.callFromThread(ready.callback, None)
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    break
                count = min(len(self._jobs), self._max_batch)
                batch = [self._jobs.popleft() for _ in range(count)]
            started = time.perf_counter()
            try:
                outcomes = self._commit(conn, batch)
                self.commit_latency.observe(time.perf_counter() - started)
            except Exception as exc:  # a bug here must not leave Deferreds waiting
                self.log.failure("sqlite writer failed a batch")
                outcomes = self._abort(conn, batch, [], StoreUnavailable(f"sqlite writer: {exc}"))
            self._reactor.callFromThread(self._deliver, batch, outcomes)
        try:
            finish(conn)
        except Exception:
            self.log.failure("closing the sqlite store failed")
        self._reactor.callFromThread(self._stopped.callback, None)

    def _commit(self, conn, batch):
        """Run ``batch`` in one transaction; ``[(ok, result_or_exception)]``.

        A job with a ``prepare()`` method has it called first, outside the transaction: if it
        raises, that job alone fails.  Neighbouring jobs with the same ``run_together(conn, jobs)``
        run in one call."""
        outcomes = [None] * len(batch)
        ready, jobs = [], []
        for index, (job, _) in enumerate(batch):
            prepare = getattr(job, "prepare", None)
            if prepare is not None:
                try:
                    prepare()
                except Exception as exc:
                    outcomes[index] = (False, translate(exc))
                    continue
            ready.append(index)
            jobs.append(job)
        if jobs:
            for index, outcome in zip(ready, self._transaction(conn, jobs)):
                outcomes[index] = outcome
        return outcomes

    def _transaction(self, conn, jobs):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._abort(conn, jobs, [], translate(exc))
        try:
            results = _run_jobs(conn, jobs)
        except Exception:
            conn.execute("ROLLBACK")  # one job failed: again, each job on its own savepoint
            self._rolled_back()
            return self._commit_each(conn, jobs)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._abort(conn, jobs, [], translate(exc))
        self.commits += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        return [(True, result) for result in results]

    def _commit_each(self, conn, jobs):
        """``_transaction`` with a SAVEPOINT per job."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return self._abort(conn, jobs, [], translate(exc))
        outcomes = []
        for job in jobs:
            try:
                conn.execute("SAVEPOINT job")
                result = job(conn)
            except Exception as exc:
                if is_unavailable(exc) or not conn.in_transaction:
                    return self._abort(conn, jobs, outcomes, translate(exc))
                try:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                except sqlite3.Error as undo:
                    return self._abort(conn, jobs, outcomes, translate(undo))
                self._rolled_back()
                outcomes.append((False, translate(exc)))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, result))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            return self._abort(conn, jobs, outcomes, translate(exc))
        self.commits += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        return outcomes

    def _rolled_back(self):
        """Tell whoever keeps memory of written rows (``on_rollback``) that some were undone."""
        for forget in self.on_rollback:
            forget()

    def _abort(self, conn, jobs, outcomes, error):
        """Roll the whole transaction back: jobs that had succeeded get ``error``."""
        self.log.warn("sqlite write transaction failed: {error}", error=error)
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._rolled_back()
        kept = [o if not o[0] else (False, error) for o in outcomes]
        return kept + [(False, error)] * (len(jobs) - len(kept))

    # -- back in the reactor -------------------------------------------------

    def oldest_wait(self) -> float:
        """Seconds the oldest unanswered write has waited (0 when none waits)."""
        submitted = self._submitted
        return time.monotonic() - submitted[0] if submitted else 0.0

    def _deliver(self, batch, outcomes):
        self.pending -= len(batch)
        for _ in range(len(batch)):  # batches are answered in the order they were submitted
            self._submitted.popleft()
        for (_, d), (ok, value) in zip(batch, outcomes):
            if ok:
                self.writes += 1
                d.callback(value)
            else:
                self.failed += 1
                d.errback(Failure(value, type(value), value.__traceback__))


class Checkpointer:
    """Copies the WAL into the database from its own thread and connection.

    The writer's own automatic checkpoint would run right after a commit,
    delaying the next batch by a checkpoint's fsyncs; here a PASSIVE checkpoint
    runs every ``interval`` seconds beside the writer, which keeps only a
    large automatic checkpoint as a safety valve.
    """

    log = Logger()

    def __init__(self, connect, interval=0.2):
        self._connect = connect
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tbcoap-sqlite-checkpoint", daemon=True)
        self.checkpoints = 0

    def start(self):
        self._thread.start()

    def stop(self):
        """End the thread (called from the writer thread at close)."""
        self._stop.set()
        self._thread.join()

    def _run(self):
        try:
            conn = self._connect()
        except Exception:
            self.log.failure("sqlite checkpointer could not connect")
            return
        try:
            while not self._stop.wait(self._interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    self.log.warn("sqlite checkpoint failed: {error}", error=exc)
        finally:
            conn.close()
