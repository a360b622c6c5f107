"""Group commit on PostgreSQL: one thread and one connection run every write of a node.

Jobs are callables ``job(conn) -> result``.  The thread takes every pending job and runs them in
one transaction; jobs that carry the same ``merge`` function and follow each other run as one
call ``merge(conn, jobs) -> [(ok, result_or_error)]`` (the telemetry of a reactor turn becomes a
few multi-row statements).  A batch of telemetry only is sent with its COMMIT in one round trip
(``merge(conn, jobs, commit=True)``, pipeline mode).  If a job raises, the transaction is rolled
back and the batch runs again with a SAVEPOINT per job, so that job fails alone.  All Deferreds
of a batch fire after its COMMIT, in one ``callFromThread``.  While a COMMIT waits for the disk
the next requests queue up, so the batches grow with the load (up to MAX_BATCH).

Faults: a connection found broken before anything of a batch was sent is replaced and the batch
runs on the new one (a connection idle for a while is tested first); a COMMIT whose answer is
lost is reported as StoreUnavailable (it may or may not have happened, and nothing was
acknowledged).  While the server cannot be reached the store is *down*: every write fails at
once, and the thread tries to connect again with a growing pause (0.1 s to 2 s).  A write that
waits longer than the URL's ``timeout`` is answered StoreUnavailable then.
"""

from __future__ import annotations

import collections
import threading
import time

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from tbcoap.errors import StoreUnavailable
from tbcoap.latency import LatencyHistogram

from .connection import is_retryable, is_unavailable, translate

MAX_BATCH = 2000
IDLE_TEST = 2.0  # seconds after which the connection is tested before a batch (a restarted server)
RETRIES = 3  # runs of a batch that met a deadlock or a serialization failure
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0


class _Entry:
    __slots__ = ("job", "d", "submitted", "answered")

    def __init__(self, job, d, submitted):
        self.job, self.d, self.submitted, self.answered = job, d, submitted, False


class GroupCommitWriter:
    """Owns the write connection; public methods run in the reactor, ``_run`` in the thread."""

    log = Logger()

    def __init__(self, reactor, connect, url, max_batch=MAX_BATCH, max_queue=10000, commit_latency=None):
        self._reactor = reactor
        self._connect = connect
        self._url = url
        self._timeout = url.timeout
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._jobs = collections.deque()  # entries the thread has not taken yet
        self._waiting = collections.deque()  # every entry not answered yet, oldest first
        self._stopping = False
        self._stopped = None
        self._thread = None
        self._wake_scheduled = False
        self._sweeper = None
        self.down = None  # why the server cannot be reached, while it cannot
        self.pending = 0
        self.commits = self.writes = self.failed = self.largest_batch = 0
        self.reconnects = self.timeouts = self.retried = 0
        self.commit_latency = commit_latency if commit_latency is not None else LatencyHistogram()
        self.prepare = None  # prepare(conn, batch, attempt): before a batch's transaction (partitions)

    # -- in the reactor ----------------------------------------------------------------

    def start(self, setup):
        """Connect and run ``setup(conn)`` (the schema) in the thread; fires when ready."""
        ready = defer.Deferred()
        self._thread = threading.Thread(target=self._run, args=(setup, ready), name="tbcoap-postgres-writer",
                                        daemon=True)
        self._thread.start()
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self._reactor
        self._sweeper.start(min(0.25, self._timeout / 4), now=False)
        return ready

    def alive(self):
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def submit(self, job):
        """Queue ``job``; the Deferred fires with its result after the commit."""
        if self.down is not None:
            return defer.fail(StoreUnavailable(self.down))
        if self.pending >= self._max_queue:
            return defer.fail(StoreUnavailable("postgresql write queue is full"))
        d = defer.Deferred()
        entry = _Entry(job, d, time.monotonic())
        self._jobs.append(entry)  # deque.append is atomic; the thread is woken once per reactor turn
        self._waiting.append(entry)
        self.pending += 1
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._reactor.callLater(0, self._wake)
        return d

    def _wake(self):
        self._wake_scheduled = False
        with self._cond:
            self._cond.notify_all()

    def oldest_wait(self) -> float:
        """Seconds the oldest unanswered write has waited (0 when none waits)."""
        self._forget_answered()
        return time.monotonic() - self._waiting[0].submitted if self._waiting else 0.0

    def _forget_answered(self):
        waiting = self._waiting
        while waiting and waiting[0].answered:
            waiting.popleft()

    def _sweep(self):
        """Answer StoreUnavailable to writes that waited longer than the timeout (O(1) when none)."""
        self._forget_answered()
        limit = time.monotonic() - self._timeout
        waiting = self._waiting
        while waiting and waiting[0].submitted < limit:
            entry = waiting.popleft()
            if not entry.answered:
                self.timeouts += 1
                self._answer(entry, False, StoreUnavailable(
                    f"postgresql at {self._url.address} did not commit within {self._timeout:g} s"))
            self._forget_answered()

    def _answer(self, entry, ok, value):
        entry.answered = True
        self.pending -= 1
        if ok:
            self.writes += 1
            entry.d.callback(value)
        else:
            self.failed += 1
            entry.d.errback(Failure(value, type(value), value.__traceback__))

    def _deliver(self, batch, outcomes):
        for entry, (ok, value) in zip(batch, outcomes):
            if not entry.answered:  # (unless the sweep answered it already)
                self._answer(entry, ok, value)
        self._forget_answered()

    def _set_down(self, reason):
        if self.down is None:
            self.log.warn("postgresql store unavailable: {reason}", reason=reason)
        self.down = reason

    def _set_up(self):
        if self.down is not None:
            self.log.info("postgresql store reconnected")
            self.reconnects += 1
        self.down = None

    def stop(self):
        """Answer every queued job, end the thread; call once."""
        self._stopped = defer.Deferred()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        return self._stopped.addBoth(self._join)

    def _join(self, result):
        self._thread.join()
        return result

    # -- in the writer thread -------------------------------------------------------------

    def _run(self, setup, ready):
        try:
            conn = self._connect()
            try:
                setup(conn)
            except BaseException:
                conn.close()
                raise
        except Exception as exc:
            self._reactor.callFromThread(ready.errback, Failure(translate(exc, self._url)))
            return
        self._reactor.callFromThread(ready.callback, None)
        used = time.perf_counter()
        while True:
            if conn is None:
                conn = self._reconnect()
                if conn is None:
                    break
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    break
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), self._max_batch))]
            started = time.perf_counter()
            if started - used > IDLE_TEST:
                conn = self._tested(conn)
            conn, outcomes, committed = self._execute(conn, batch)
            if committed is False:
                conn, outcomes = self._commit(conn, batch, outcomes)
            if conn is not None:
                self.commit_latency.observe(time.perf_counter() - started)
            used = time.perf_counter()
            self._reactor.callFromThread(self._deliver, batch, outcomes)
        if conn is not None:
            conn.close()
        self._reactor.callFromThread(self._stopped.callback, None)

    def _tested(self, conn):
        """``conn`` if it still works, else a new connection (or the old one, to fail on)."""
        try:
            conn.execute("SELECT 1")
            conn.rollback()
            return conn
        except Exception:
            conn.close()
        try:
            conn = self._connect()
        except StoreUnavailable:
            return conn  # (closed: the batch fails, and the thread tries again with a pause)
        self.reconnects += 1
        return conn

    def _fail(self, batch, error):
        self._reactor.callFromThread(self._deliver, batch, [(False, error)] * len(batch))

    def _reconnect(self):
        """A new connection, trying again with a growing pause while queued jobs fail at once;
        None once stopping."""
        pause = BACKOFF_FIRST
        while True:
            try:
                conn = self._connect()
            except StoreUnavailable as exc:
                reason = str(exc)
            else:
                self._reactor.callFromThread(self._set_up)
                return conn
            self._reactor.callFromThread(self._set_down, reason)
            deadline = time.monotonic() + pause
            while True:
                with self._cond:
                    left = deadline - time.monotonic()
                    if left > 0 and not self._jobs and not self._stopping:
                        self._cond.wait(left)
                    queued = list(self._jobs)
                    self._jobs.clear()
                    stopping = self._stopping
                if queued:
                    self._fail(queued, StoreUnavailable(reason))
                if stopping:
                    return None
                if time.monotonic() >= deadline:
                    break
            pause = min(pause * 2, BACKOFF_MAX)

    def _execute(self, conn, batch):
        """Run ``batch`` in one transaction: ``(conn, outcomes, committed)``: committed is True when
        the COMMIT went with the statements, False when it is still to be sent, None when the
        transaction failed (every outcome a failure); conn is the connection to go on with (None
        if it broke)."""
        attempt = 0
        savepoints = False
        while True:
            attempt += 1
            try:
                if conn.closed:
                    raise StoreUnavailable(f"postgresql at {self._url.address} is not reachable")
                if self.prepare is not None:
                    self.prepare(conn, batch, attempt)
                merge = getattr(batch[0].job, "merge", None)
                if not savepoints and merge is not None and all(getattr(e.job, "merge", None) is merge
                                                                for e in batch):
                    try:
                        outcomes = merge(conn, [entry.job for entry in batch], commit=True)
                    except Exception as exc:
                        if conn.broken:  # the COMMIT was sent too: it may or may not have happened
                            return (*self._abort(conn, batch, translate(exc, self._url)), None)
                        if is_unavailable(exc) or is_retryable(exc):
                            raise
                        raise _Rerun() from exc
                    self._committed(batch)
                    return conn, outcomes, True
                return conn, self._run_jobs(conn, batch, savepoints), False
            except _Rerun:
                conn.rollback()
                savepoints = True
                continue
            except Exception as exc:
                if is_retryable(exc) and attempt < RETRIES:
                    self.retried += 1
                    _rollback(conn)
                    continue
                return (*self._abort(conn, batch, translate(exc, self._url)), None)

    def _commit(self, conn, batch, outcomes):
        """COMMIT: ``(conn, outcomes)``, or every job failed if the commit did (it may or may not
        have happened: nothing is acknowledged)."""
        try:
            conn.commit()
        except Exception as exc:
            return self._abort(conn, batch, translate(exc, self._url))
        self._committed(batch)
        return conn, outcomes

    def _committed(self, batch):
        self.commits += 1
        self.largest_batch = max(self.largest_batch, len(batch))

    def _abort(self, conn, batch, error):
        """Every job of the batch fails with ``error``; a broken connection is dropped."""
        self.log.warn("postgresql write transaction failed: {error}", error=error)
        if conn.broken or conn.closed:
            conn.close()
            return None, [(False, error)] * len(batch)
        _rollback(conn)
        return conn, [(False, error)] * len(batch)

    def _run_jobs(self, conn, batch, savepoints):
        """Outcomes of the jobs, in one transaction; raises _Rerun when a job failed without
        savepoints (the caller rolls back and runs the batch again with them)."""
        outcomes = []
        i = 0
        while i < len(batch):
            merge = getattr(batch[i].job, "merge", None)
            j = i + 1
            if merge is not None and not savepoints:
                while j < len(batch) and getattr(batch[j].job, "merge", None) is merge:
                    j += 1
            group = [entry.job for entry in batch[i:j]]
            if savepoints:
                conn.execute("SAVEPOINT job")
            try:
                if merge is not None:
                    outcomes.extend(merge(conn, group))
                else:
                    outcomes.append((True, group[0](conn)))
            except Exception as exc:
                if not savepoints or is_unavailable(exc) or is_retryable(exc) or conn.broken:
                    if not savepoints and not is_unavailable(exc) and not is_retryable(exc):
                        raise _Rerun() from exc
                    raise
                conn.execute("ROLLBACK TO SAVEPOINT job")
                outcomes.append((False, translate(exc, self._url)))
            else:
                if savepoints:
                    conn.execute("RELEASE SAVEPOINT job")
            i = j
        return outcomes


class _Rerun(Exception):
    """A job failed: run the batch again, a savepoint per job."""


def _rollback(conn):
    try:
        conn.rollback()
    except Exception:
        pass
