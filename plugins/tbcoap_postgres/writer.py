"""Group commit on PostgreSQL: two threads, each with a connection, run every write of a node.

Jobs are callables ``job(conn) -> result``.  The thread takes every pending job and runs them in
one transaction; jobs that carry the same ``merge`` function and follow each other run as one
call ``merge(conn, jobs) -> [(ok, result_or_error)]`` (the telemetry of a reactor turn becomes a
few multi-row statements).  If a job raises, the transaction is rolled back and the batch runs
again with a SAVEPOINT per job, so that job fails alone.  All Deferreds of a batch fire after
its COMMIT, in one ``callFromThread``.  The threads take turns: one runs a batch's statements
while holding a baton, then lets it go for its COMMIT, so the next batch runs on the other
connection while the first waits for the disk.  Batches thus run their statements strictly one
after the other (a later write of a row waits for the earlier one's commit on its row lock).

Faults: a connection found broken before COMMIT is replaced and the batch runs again (nothing of
it was committed); a COMMIT that fails is reported as StoreUnavailable (it may or may not have
happened, and nothing was acknowledged).  While the server cannot be reached the store is *down*:
every write fails at once, and the thread tries to connect again with a growing pause (0.1 s to
2 s).  A write that waits longer than the URL's ``timeout`` is answered StoreUnavailable then.
"""

from __future__ import annotations

import collections
import threading
import time

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from tbcoap.errors import StoreUnavailable
from tbcoap.metrics import LatencyHistogram

from .connection import is_retryable, is_unavailable, translate

MAX_BATCH = 2000
COMMITTERS = 2  # connections taking turns: one runs a batch while the other's COMMIT waits for the disk
EAGER_BATCH = 100  # a batch this large does not wait for the other connection's COMMIT to end
RETRIES = 3  # runs of a batch that met a deadlock or a serialization failure
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0


class _Entry:
    __slots__ = ("job", "d", "submitted", "answered")

    def __init__(self, job, d, submitted):
        self.job, self.d, self.submitted, self.answered = job, d, submitted, False


class GroupCommitWriter:
    """Owns the write connection; public methods run in the reactor, ``_run`` in the thread."""

    log = Logger()

    def __init__(self, reactor, connect, url, max_batch=MAX_BATCH, max_queue=10000, committers=COMMITTERS):
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
        self._threads = []
        self._committers = committers
        self._running = committers
        self._baton = threading.Lock()  # held while a batch's statements run (not during its COMMIT)
        self._committing = 0  # threads in their COMMIT now
        self._wake_scheduled = False
        self._sweeper = None
        self.down = None  # why the server cannot be reached, while it cannot
        self.pending = 0
        self.commits = self.writes = self.failed = self.largest_batch = 0
        self.reconnects = self.timeouts = self.retried = 0
        self.commit_latency = LatencyHistogram()
        self.prepare = None  # prepare(conn, batch, attempt): before a batch's transaction (partitions)

    # -- in the reactor ----------------------------------------------------------------

    def start(self, setup):
        """Connect and run ``setup(conn)`` (the schema) in the thread; fires when ready."""
        ready = defer.Deferred()
        thread = threading.Thread(target=self._run, args=(setup, ready), name="tbcoap-postgres-writer-0",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self._reactor
        self._sweeper.start(min(0.25, self._timeout / 4), now=False)
        return ready

    def alive(self):
        return bool(self._threads) and all(t.is_alive() for t in self._threads) and not self._stopping

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
        """Answer every queued job, end the threads; call once."""
        self._stopped = defer.Deferred()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        return self._stopped.addBoth(self._join)

    def _join(self, result):
        for thread in self._threads:
            thread.join()
        return result

    # -- in the writer threads -------------------------------------------------------------

    def _run(self, setup, ready):
        try:
            conn = self._connect()
            try:
                setup(conn)
            except BaseException:
                conn.close()
                raise
        except Exception as exc:
            self._running = 0
            self._reactor.callFromThread(ready.errback, Failure(translate(exc, self._url)))
            return
        for n in range(1, self._committers):  # they connect when they first take a batch
            thread = threading.Thread(target=self._work, args=(None,), name=f"tbcoap-postgres-writer-{n}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()
        self._reactor.callFromThread(ready.callback, None)
        self._work(conn)

    def _work(self, conn):
        """Take a batch and run its statements while holding the baton, then commit without it:
        the next batch runs on the other connection while this commit waits for the disk."""
        while True:
            if conn is None:
                conn = self._reconnect()
                if conn is None:
                    break
            with self._baton:
                with self._cond:
                    # while the other connection commits, a small batch waits for that commit (and
                    # grows meanwhile): batches that lock the same rows would commit one after the
                    # other anyway, and fewer, larger ones mean fewer flushes of the WAL
                    while not self._stopping and (not self._jobs or (self._committing
                                                                     and len(self._jobs) < EAGER_BATCH)):
                        self._cond.wait()
                    if not self._jobs:
                        break
                    batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), self._max_batch))]
                started = time.perf_counter()
                conn, outcomes, ran = self._execute(conn, batch)
                if ran:
                    with self._cond:
                        self._committing += 1
            if ran:
                try:
                    conn, outcomes = self._commit(conn, batch, outcomes)
                finally:
                    with self._cond:
                        self._committing -= 1
                        self._cond.notify_all()
                if conn is not None:
                    self.commit_latency.observe(time.perf_counter() - started)
            self._reactor.callFromThread(self._deliver, batch, outcomes)
        if conn is not None:
            conn.close()
        with self._cond:
            self._running -= 1
            last = self._running == 0
        if last:
            self._reactor.callFromThread(self._stopped.callback, None)

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
        """Run the statements of ``batch`` in one transaction: ``(conn, outcomes, True)``, or
        ``(conn, failures, False)`` when the transaction failed; conn is the connection to go on
        with (a new one after a loss, None if none could be made)."""
        attempt = 0
        savepoints = False
        while True:
            attempt += 1
            try:
                if self.prepare is not None:
                    self.prepare(conn, batch, attempt)
                return conn, self._run_jobs(conn, batch, savepoints), True
            except _Rerun:
                conn.rollback()
                savepoints = True
                continue
            except Exception as exc:
                if is_retryable(exc) and attempt < RETRIES:
                    self.retried += 1
                    _rollback(conn)
                    continue
                if is_unavailable(exc) and attempt == 1 and conn.broken:
                    conn.close()  # nothing of the batch was committed: again on a new connection
                    try:
                        conn = self._connect()
                    except StoreUnavailable as down:
                        self._reactor.callFromThread(self._set_down, str(down))
                        return None, [(False, down)] * len(batch), False
                    self.reconnects += 1
                    continue
                return (*self._abort(conn, batch, translate(exc, self._url)), False)

    def _commit(self, conn, batch, outcomes):
        """COMMIT: ``(conn, outcomes)``, or every job failed if the commit did (it may or may not
        have happened: nothing is acknowledged)."""
        try:
            conn.commit()
        except Exception as exc:
            return self._abort(conn, batch, translate(exc, self._url))
        self.commits += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        return conn, outcomes

    def _abort(self, conn, batch, error):
        """Every job of the batch fails with ``error``; a broken connection is dropped."""
        self.log.warn("postgresql write transaction failed: {error}", error=error)
        if conn.broken:
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
