"""SQLiteStore: the IStore on one SQLite file in WAL mode.

Writes are jobs for the GroupCommitWriter (one thread, one connection, one
transaction per batch).  Reads run in a small ThreadPool, each thread with
its own read-only connection, inside a transaction for a consistent view.
"""

import dataclasses
import os
import re
import sqlite3
import threading
import time

from twisted.internet import defer, threads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, NotFound, StoreUnavailable
from tbcoap.interfaces import IStore
from tbcoap.storekit import (
    DEVICE_SORT_PROPERTIES,
    bucket_ts,
    check,
    check_aggregate,
    check_deletion,
    check_expiry,
    check_claim_request,
    check_credentials,
    check_customer,
    check_device_query,
    check_entries,
    check_owner_change,
    check_rpc,
    check_status_change,
    check_values,
    is_id,
    is_int64,
    key_list,
)
from tbcoap.models import (
    now_ms,
    PROVISION_TYPES,
    SCOPES,
    ClaimRequest,
    Credentials,
    Customer,
    Device,
    DeviceProfile,
    Rpc,
    from_kind,
)

from . import schema
from .writer import Checkpointer, GroupCommitWriter, translate

STALLED_WRITE = 5.0  # seconds a write may wait before check() says the store cannot write
WAL_SAFETY_PAGES = 16384  # the writer checkpoints itself only past this many WAL pages (64 MiB)

_CHUNK = 500  # keys per IN (...) list
_DEVICE = "d.id, d.name, d.type, d.label, d.created_time, d.customer_id, d.additional_info"
_PROFILE = "id, name, provision_type, provision_key, provision_secret, created_time"
_CUSTOMER = "id, title, created_time"
_DEVICE_SORT = {"createdTime": "d.created_time", "name": "d.name", "type": "d.type", "label": "d.label"}
assert set(_DEVICE_SORT) == set(DEVICE_SORT_PROPERTIES)
_LIKE_SPECIAL = re.compile(r"[%_\\]")
_RPC = (
    "id, device_id, request_id, method, params_json, oneway, persistent,"
    " expiration_time, created_time, status, response_json"
)
# The statuses not in RPC_FINAL, in the very words of the partial index
# rpcs_pending (SQLite uses that index only for an identical term).
_RPC_PENDING_SQL = "status IN ('QUEUED', 'SENT', 'DELIVERED')"
_COUNTER_BUMP = (
    "INSERT INTO rpc_counters (device_id, last_request_id) VALUES (?, 1)"
    " ON CONFLICT (device_id) DO UPDATE SET last_request_id = last_request_id + 1"
)
_LATEST_UPSERT = (
    "INSERT INTO ts_kv_latest (device_id, key, ts, kind, value) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE SET ts = excluded.ts, kind = excluded.kind,"
    " value = excluded.value WHERE excluded.ts >= ts_kv_latest.ts"
)

_SERIES_UPSERT = (  # a series' oldest point (retention's lower bound) moves only further back
    "INSERT INTO ts_kv_series (device_id, key, oldest) VALUES (?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE SET oldest = excluded.oldest WHERE excluded.oldest < ts_kv_series.oldest"
)










def _one(conn, sql, *params):
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def _by_keys(conn, sql, params, keys):
    """Rows of ``sql`` (which ends in a WHERE clause), restricted to ``keys`` unless None."""
    if keys is None:
        yield from conn.execute(sql, params)
        return
    for i in range(0, len(keys), _CHUNK):
        part = keys[i : i + _CHUNK]
        marks = ", ".join("?" * len(part))
        yield from conn.execute(f"{sql} AND key IN ({marks})", (*params, *part))


def _series_keys(conn, device_id):
    return [k for (k,) in conn.execute("SELECT key FROM ts_kv_latest WHERE device_id = ?", (device_id,))]


def _rpc(row):
    (id_, device_id, request_id, method, params, oneway, persistent, expires, created, status, response) = row
    return Rpc(
        id=id_, device_id=device_id, request_id=request_id, method=method, params_json=params,
        oneway=bool(oneway), persistent=bool(persistent), expiration_time=expires,
        created_time=created, status=status, response_json=response,
    )






def _require_device(conn, device_id):
    if _one(conn, "SELECT 1 FROM devices WHERE id = ?", device_id) is None:
        raise NotFound(f"no device with id {device_id}")


def _require_customer(conn, customer_id):
    if _one(conn, "SELECT 1 FROM customers WHERE id = ?", customer_id) is None:
        raise NotFound(f"no customer with id {customer_id}")




def private_files(path):
    """The database file (created if missing) and its WAL and shared-memory files: 0600, whatever
    the umask (SQLite gives new -wal and -shm files the database file's mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, path + "-wal", path + "-shm"):
        if os.path.exists(name):
            os.chmod(name, 0o600)


def _fold(text):
    """Case folding for searches that SQLite's LIKE cannot fold (non-ASCII)."""
    return text.casefold() if isinstance(text, str) else text




@implementer(IStore)
class SQLiteStore:
    """Devices, credentials, profiles, telemetry, attributes, RPCs, customers, claim
    requests and provisioned marks in one SQLite file."""

    name = "sqlite"

    def __init__(self, path, sync="normal", busy_timeout=5.0, read_threads=4, max_queue=10000, reactor=None):
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self._sync = sync
        self._busy_timeout = busy_timeout
        self._read_threads = read_threads
        self._max_queue = max_queue
        self._reactor = reactor
        self._state = "new"  # -> opening -> open -> closing -> closed
        self._writer = None
        self.commit_latency = None  # the writer's LatencyHistogram, once open
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
        if self._state == "open":
            return defer.succeed(None)
        if self._state != "new":
            return defer.fail(StoreUnavailable(f"sqlite store is {self._state}"))
        self._state = "opening"
        self._writer = GroupCommitWriter(self._reactor, self._connect_writer)
        self.commit_latency = self._writer.commit_latency
        return self._writer.start(self._setup, self._finish).addCallbacks(self._opened, self._open_failed)

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
        self._writer = None
        self._state = "closed" if self._close_waiters else "new"
        self._fire_close_waiters()
        return failure

    def close(self):
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
        self._writer.stop().addBoth(lambda _: self._fire_close_waiters())

    def _fire_close_waiters(self):
        if self._state == "closing":
            self._state = "closed"
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def check(self):
        if self._writer is not None and self._state == "open":
            if not self._writer.alive():
                return defer.fail(StoreUnavailable("sqlite writer thread is not running"))
            waited = self._writer.oldest_wait()
            if waited > STALLED_WRITE:
                return defer.fail(StoreUnavailable(f"sqlite writes have waited {waited:.1f} s (database locked?)"))

        def read(conn):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

        return self._read(read)

    def bus(self):
        """None: one node uses a SQLite file alone."""
        return None

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
        w = self._writer
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
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
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
            conn.create_function("tbcoap_fold", 1, _fold, deterministic=True)
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    # -- running jobs ----------------------------------------------------------

    def _unavailable(self):
        return defer.fail(StoreUnavailable(f"sqlite store is {self._state.replace('new', 'not open')}"))

    def _write(self, job):
        if self._state != "open":
            return self._unavailable()
        if self._writer.pending >= self._max_queue:
            return defer.fail(StoreUnavailable("sqlite write queue is full"))
        return self._writer.submit(job)

    def _read(self, fn, *args):
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

    # -- devices and profiles --------------------------------------------------

    def add_device(self, device, token):
        if not isinstance(token, str) or not token:
            return defer.fail(BadRequest("an access token is required"))

        def job(conn):
            if _one(conn, "SELECT 1 FROM devices WHERE name = ?", device.name):
                raise DuplicateName(f"a device named {device.name!r} exists")
            if _one(conn, "SELECT 1 FROM credentials WHERE token = ?", token):
                raise DuplicateToken("this access token is used by another device")
            conn.execute(
                "INSERT INTO devices (id, name, type, label, created_time, customer_id, additional_info)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device.id, device.name, device.type, device.label, device.created_time, device.customer_id,
                 device.additional_info),
            )
            conn.execute("INSERT INTO credentials (token, device_id) VALUES (?, ?)", (token, device.id))
            return device

        return self._write(job)

    def update_device(self, device):
        def job(conn):
            _require_device(conn, device.id)
            owner = _one(conn, "SELECT id FROM devices WHERE name = ?", device.name)
            if owner is not None and owner != device.id:
                raise DuplicateName(f"a device named {device.name!r} exists")
            conn.execute("UPDATE devices SET name = ?, type = ?, label = ?, additional_info = ? WHERE id = ?",
                         (device.name, device.type, device.label, device.additional_info, device.id))
            row = conn.execute(f"SELECT {_DEVICE} FROM devices d WHERE d.id = ?", (device.id,)).fetchone()
            return Device(*row)

        return self._write(job)

    def _row_as(self, model, sql, *values):
        """Deferred ``model(*row)`` of the one row ``sql`` finds for ``values``, or None."""
        def read(conn):
            row = conn.execute(sql, values).fetchone()
            return model(*row) if row else None

        return self._read(read)

    def _device_where(self, where, value):
        return self._row_as(Device, f"SELECT {_DEVICE} FROM {where}", value)

    def get_device(self, device_id):
        return self._device_where("devices d WHERE d.id = ?", device_id)

    def device_by_name(self, name):
        return self._device_where("devices d WHERE d.name = ?", name)

    def device_by_credentials(self, credentials_type, credentials_id):
        where = "credentials c JOIN devices d ON d.id = c.device_id WHERE c.token = ? AND c.type = ?"
        return self._row_as(Device, f"SELECT {_DEVICE} FROM {where}", credentials_id, credentials_type)

    def _page(self, table, columns, limit, offset, build):
        if not (is_int64(limit, 0) and is_int64(offset, 0)):
            return defer.fail(BadRequest("limit and offset must be integers >= 0"))

        def read(conn):
            rows = conn.execute(
                f"SELECT {columns} FROM {table} ORDER BY created_time, id LIMIT ? OFFSET ?", (limit, offset)
            )
            items = [build(*row) for row in rows]
            return items, _one(conn, f"SELECT count(*) FROM {table}")

        return self._read(read)

    def list_devices(self, limit, offset, text_search=None, sort_property="createdTime", descending=False):
        return self._device_page("", (), limit, offset, text_search, sort_property, descending)

    def _device_page(self, where, params, limit, offset, text_search, sort_property, descending):
        """A page of devices matching ``where`` (SQL after WHERE, or ""), searched and sorted here."""
        try:
            check_device_query(limit, offset, text_search, sort_property)
        except BadRequest:
            return defer.fail()
        terms, params = ([where] if where else []), list(params)
        if text_search:
            if text_search.isascii():  # LIKE folds ASCII case, and uses no Python per row
                terms.append("d.name LIKE ? ESCAPE '\\'")
                params.append("%" + _LIKE_SPECIAL.sub(r"\\\g<0>", text_search) + "%")
            else:
                terms.append("instr(tbcoap_fold(d.name), ?) > 0")
                params.append(text_search.casefold())
        condition = f" WHERE {' AND '.join(terms)}" if terms else ""
        order = "DESC" if descending else "ASC"

        def read(conn):
            rows = conn.execute(
                f"SELECT {_DEVICE} FROM devices d{condition}"
                f" ORDER BY {_DEVICE_SORT[sort_property]} {order}, d.id {order} LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
            items = [Device(*row) for row in rows]
            return items, _one(conn, f"SELECT count(*) FROM devices d{condition}", *params)

        return self._read(read)

    def delete_device(self, device_id):
        def job(conn):
            for table in (
                "credentials", "ts_kv", "ts_kv_latest", "ts_kv_series", "attributes", "rpcs", "rpc_counters", "claim_requests",
            ):
                conn.execute(f"DELETE FROM {table} WHERE device_id = ?", (device_id,))
            return conn.execute("DELETE FROM devices WHERE id = ?", (device_id,)).rowcount > 0

        return self._write(job)

    def get_credentials(self, device_id):
        def read(conn):
            row = conn.execute("SELECT type, token, value FROM credentials WHERE device_id = ?", (device_id,)).fetchone()
            return Credentials(*row) if row else None

        return self._read(read)

    def set_credentials(self, device_id, credentials):
        try:
            check_credentials(credentials)
        except BadRequest:
            return defer.fail()

        def job(conn):
            _require_device(conn, device_id)
            owner = _one(conn, "SELECT device_id FROM credentials WHERE token = ?", credentials.id)
            if owner is not None and owner != device_id:
                raise DuplicateToken("these credentials are used by another device")
            conn.execute("DELETE FROM credentials WHERE device_id = ?", (device_id,))
            conn.execute("INSERT INTO credentials (token, device_id, type, value) VALUES (?, ?, ?, ?)",
                         (credentials.id, device_id, credentials.type, credentials.value))
            return None

        return self._write(job)

    def add_profile(self, profile):
        if profile.provision_type not in PROVISION_TYPES:
            return defer.fail(BadRequest(f"unknown provision type {profile.provision_type!r}"))

        def job(conn):
            if _one(conn, "SELECT 1 FROM device_profiles WHERE name = ?", profile.name):
                raise DuplicateName(f"a device profile named {profile.name!r} exists")
            key = profile.provision_key
            if key is not None and _one(conn, "SELECT 1 FROM device_profiles WHERE provision_key = ?", key):
                raise BadRequest("this provision key is used by another device profile")
            conn.execute(
                f"INSERT INTO device_profiles ({_PROFILE}) VALUES (?, ?, ?, ?, ?, ?)",
                (profile.id, profile.name, profile.provision_type, key, profile.provision_secret,
                 profile.created_time),
            )
            return profile

        return self._write(job)

    def update_profile(self, profile):
        if profile.provision_type not in PROVISION_TYPES:
            return defer.fail(BadRequest(f"unknown provision type {profile.provision_type!r}"))

        def job(conn):
            old = _one(conn, "SELECT name FROM device_profiles WHERE id = ?", profile.id)
            if old is None:
                raise NotFound(f"no device profile with id {profile.id}")
            if _one(conn, "SELECT 1 FROM device_profiles WHERE name = ? AND id != ?", profile.name, profile.id):
                raise DuplicateName(f"a device profile named {profile.name!r} exists")
            key = profile.provision_key
            if key is not None and _one(conn, "SELECT 1 FROM device_profiles WHERE provision_key = ? AND id != ?",
                                        key, profile.id):
                raise BadRequest("this provision key is used by another device profile")
            conn.execute("UPDATE device_profiles SET name = ?, provision_type = ?, provision_key = ?,"
                         " provision_secret = ? WHERE id = ?",
                         (profile.name, profile.provision_type, key, profile.provision_secret, profile.id))
            if old != profile.name:
                conn.execute("UPDATE devices SET type = ? WHERE type = ?", (profile.name, old))
            row = conn.execute(f"SELECT {_PROFILE} FROM device_profiles WHERE id = ?", (profile.id,)).fetchone()
            return DeviceProfile(*row)

        return self._write(job)

    def profile_by_name(self, name):
        def read(conn):
            row = conn.execute(f"SELECT {_PROFILE} FROM device_profiles WHERE name = ?", (name,)).fetchone()
            return DeviceProfile(*row) if row else None

        return self._read(read)

    def list_profiles(self, limit, offset):
        return self._page("device_profiles", _PROFILE, limit, offset, DeviceProfile)

    def profile_by_provision_key(self, key):
        if not isinstance(key, str) or not key:
            return defer.succeed(None)  # a missing or empty key matches no profile

        def read(conn):
            sql = f"SELECT {_PROFILE} FROM device_profiles WHERE provision_key = ?"
            row = conn.execute(sql, (key,)).fetchone()
            return DeviceProfile(*row) if row else None

        return self._read(read)

    def mark_provisioned(self, device_id):
        def job(conn):
            _require_device(conn, device_id)
            cursor = conn.execute(
                "INSERT OR IGNORE INTO attributes (device_id, scope, key, kind, value, last_update_ts)"
                " VALUES (?, 'SERVER_SCOPE', 'provisionState', 'STRING', 'provisioned', ?)", (device_id, now_ms()))
            return cursor.rowcount > 0

        return self._write(job)

    # -- telemetry ---------------------------------------------------------------

    def save_telemetry(self, device_id, entries, ttl=None):
        try:
            check(ttl is None or is_int64(ttl, 0), "ttl must be milliseconds (an integer >= 0)")
            rows = [(device_id, key, ts, kind, data) for ts, key, kind, data in check_entries(entries)]
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)
        history = [(*row, row[2] + ttl if ttl else None) for row in rows]
        oldest = {}
        for _, key, ts, _, _ in rows:
            if ts < oldest.get(key, ts + 1):
                oldest[key] = ts
        series = [(device_id, key, ts) for key, ts in oldest.items()]

        def job(conn):
            _require_device(conn, device_id)
            conn.executemany(
                "INSERT OR REPLACE INTO ts_kv (device_id, key, ts, kind, value, expires) VALUES (?, ?, ?, ?, ?, ?)",
                history,
            )
            conn.executemany(_LATEST_UPSERT, rows)
            conn.executemany(_SERIES_UPSERT, series)

        return self._write(job)

    def expire_telemetry(self, now, older_than, limit):
        try:
            check_expiry(now, older_than, limit)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            deleted = visited = 0
            while older_than is not None and deleted < limit and visited < limit:
                # the series whose oldest point may have expired (a lower bound, indexed), then a
                # range of that series: neighbouring rows of the primary key, cheap to delete
                row = conn.execute("SELECT device_id, key FROM ts_kv_series WHERE oldest < ? ORDER BY oldest LIMIT 1",
                                   (older_than,)).fetchone()
                if row is None:
                    break
                visited += 1
                bound = _one(conn, "SELECT ts FROM ts_kv WHERE device_id = ? AND key = ? AND ts < ?"
                             " ORDER BY ts LIMIT 1 OFFSET ?", *row, older_than, limit - deleted)
                deleted += conn.execute("DELETE FROM ts_kv WHERE device_id = ? AND key = ? AND ts < ?",
                                        (*row, older_than if bound is None else bound)).rowcount
                left = bound if bound is not None else _one(
                    conn, "SELECT min(ts) FROM ts_kv WHERE device_id = ? AND key = ?", *row)
                if left is None:
                    conn.execute("DELETE FROM ts_kv_series WHERE device_id = ? AND key = ?", row)
                else:
                    conn.execute("UPDATE ts_kv_series SET oldest = ? WHERE device_id = ? AND key = ?", (left, *row))
            if deleted >= limit or visited >= limit:
                return deleted, True
            gone = conn.execute(
                "DELETE FROM ts_kv WHERE (device_id, key, ts) IN"
                " (SELECT device_id, key, ts FROM ts_kv WHERE expires <= ? LIMIT ?)",
                (now, limit - deleted)).rowcount
            return deleted + gone, deleted + gone >= limit

        return self._write(job)

    def delete_telemetry(self, device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        try:
            keys = check_deletion(keys, start_ts, end_ts)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            _require_device(conn, device_id)
            for key in keys:
                conn.execute("DELETE FROM ts_kv WHERE device_id = ? AND key = ? AND ts >= ? AND ts < ?",
                             (device_id, key, start_ts, end_ts))
                latest = _one(conn, "SELECT ts FROM ts_kv_latest WHERE device_id = ? AND key = ?", device_id, key)
                if latest is None or not start_ts <= latest < end_ts or not delete_latest:
                    continue
                conn.execute("DELETE FROM ts_kv_latest WHERE device_id = ? AND key = ?", (device_id, key))
                if rewrite_latest:
                    conn.execute(
                        "INSERT INTO ts_kv_latest (device_id, key, ts, kind, value) SELECT device_id, key, ts,"
                        " kind, value FROM ts_kv WHERE device_id = ? AND key = ? ORDER BY ts DESC LIMIT 1",
                        (device_id, key))

        return self._write(job)

    def latest_telemetry(self, device_id, keys):
        try:
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            sql = "SELECT key, ts, kind, value FROM ts_kv_latest WHERE device_id = ?"
            rows = _by_keys(conn, sql, (device_id,), keys)
            return {key: (ts, from_kind(kind, v)) for key, ts, kind, v in rows}

        return self._read(read)

    def telemetry_history(self, device_id, keys, start_ts, end_ts, limit, descending):
        try:
            keys = key_list(keys)
            check(is_int64(start_ts) and is_int64(end_ts), "start and end must be integer timestamps")
            check(is_int64(limit, 1), "limit must be a positive integer")
        except BadRequest as exc:
            return defer.fail(exc)
        order = "DESC" if descending else "ASC"

        def read(conn):
            names = _series_keys(conn, device_id) if keys is None else keys
            out = {}
            for key in names:
                rows = conn.execute(
                    "SELECT ts, kind, value FROM ts_kv WHERE device_id = ? AND key = ? AND ts BETWEEN ? AND ?"
                    f" ORDER BY ts {order} LIMIT ?",
                    (device_id, key, start_ts, end_ts, limit),
                ).fetchall()
                if rows:
                    out[key] = [(ts, from_kind(kind, v)) for ts, kind, v in rows]
            return out

        return self._read(read)

    def telemetry_aggregate(self, device_id, keys, start_ts, end_ts, interval, agg, limit, descending):
        try:
            keys = key_list(keys)
            check_aggregate(start_ts, end_ts, interval, agg, limit)
        except BadRequest as exc:
            return defer.fail(exc)
        numbers = "" if agg == "COUNT" else " AND kind IN ('LONG', 'DOUBLE')"
        value = "count(*)" if agg == "COUNT" else f"{agg.lower()}(value)"
        sql = (f"SELECT (ts - ?) / ? AS bucket, {value}, max(kind = 'DOUBLE') FROM ts_kv"
               f" WHERE device_id = ? AND key = ? AND ts >= ? AND ts < ?{numbers}"
               f" GROUP BY bucket ORDER BY bucket {'DESC' if descending else 'ASC'} LIMIT ?")

        def point(bucket, result, any_double):
            if agg == "AVG" or (agg == "SUM" and any_double):
                result = float(result)
            return bucket_ts(start_ts, end_ts, interval, bucket), result

        def query(conn, key, low, high):
            params = (start_ts, interval, device_id, key, low, high, limit)
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:  # an integer SUM past 64 bits: add as floats
                if "overflow" not in str(exc):
                    raise
                return conn.execute(sql.replace("sum(value)", "total(value)"), params).fetchall()

        # with fewer buckets asked than the range has, the first (or, descending, the last) ``limit``
        # bucket slots are grouped first, then four times as many, and so on until ``limit`` buckets
        # hold points: the newest day of a year of points never groups the whole year
        slots = -(-(end_ts - start_ts) // interval)

        def window(span):
            if descending:
                return start_ts + (slots - span) * interval, end_ts
            return start_ts, start_ts + span * interval

        def read(conn):
            out = {}
            for key in _series_keys(conn, device_id) if keys is None else keys:
                span = limit
                while span < slots:
                    rows = query(conn, key, *window(span))
                    if len(rows) >= limit:
                        break
                    span *= 4
                else:
                    rows = query(conn, key, start_ts, end_ts)
                if rows:
                    out[key] = [point(*row) for row in rows]
            return out

        return self._read(read)

    def telemetry_keys(self, device_id):
        return self._read(lambda conn: sorted(_series_keys(conn, device_id)))

    # -- attributes --------------------------------------------------------------

    def save_attributes(self, device_id, scope, values, ts):
        try:
            check(scope in SCOPES, f"unknown attribute scope {scope!r}")
            check(is_int64(ts), f"timestamp must be a 64-bit integer, not {ts!r}")
            rows = [(device_id, scope, key, kind, data, ts) for key, kind, data in check_values(values)]
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)

        def job(conn):
            _require_device(conn, device_id)
            conn.executemany(
                "INSERT OR REPLACE INTO attributes (device_id, scope, key, kind, value, last_update_ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

        return self._write(job)

    def get_attributes(self, device_id, scope, keys):
        try:
            check(scope in SCOPES, f"unknown attribute scope {scope!r}")
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            sql = "SELECT key, kind, value, last_update_ts FROM attributes WHERE device_id = ? AND scope = ?"
            rows = _by_keys(conn, sql, (device_id, scope), keys)
            return {key: (from_kind(kind, v), ts) for key, kind, v, ts in rows}

        return self._read(read)

    def delete_attributes(self, device_id, scope, keys):
        try:
            check(scope in SCOPES, f"unknown attribute scope {scope!r}")
            check(keys is not None, "the keys to delete are required")
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            _require_device(conn, device_id)
            sql = "SELECT key FROM attributes WHERE device_id = ? AND scope = ?"
            found = {k for (k,) in _by_keys(conn, sql, (device_id, scope), keys)}
            gone = [k for k in keys if k in found]
            conn.executemany(
                "DELETE FROM attributes WHERE device_id = ? AND scope = ? AND key = ?",
                [(device_id, scope, k) for k in gone],
            )
            return gone

        return self._write(job)

    # -- server-side RPCs ----------------------------------------------------------

    def add_rpc(self, rpc):
        try:
            check_rpc(rpc)
        except BadRequest:
            return defer.fail()

        def job(conn):
            _require_device(conn, rpc.device_id)
            if _one(conn, "SELECT 1 FROM rpcs WHERE id = ?", rpc.id):
                raise BadRequest("an RPC with this id exists")
            # The counter and the row commit together: an id is used once or not at all.
            conn.execute(_COUNTER_BUMP, (rpc.device_id,))
            request_id = _one(
                conn, "SELECT last_request_id FROM rpc_counters WHERE device_id = ?", rpc.device_id
            )
            stored = dataclasses.replace(rpc, request_id=request_id)
            conn.execute(
                f"INSERT INTO rpcs ({_RPC}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (stored.id, stored.device_id, request_id, stored.method, stored.params_json,
                 int(stored.oneway), int(stored.persistent), stored.expiration_time,
                 stored.created_time, stored.status, stored.response_json),
            )
            return stored

        return self._write(job)

    def _rpc_where(self, where, *params):
        def read(conn):
            row = conn.execute(f"SELECT {_RPC} FROM rpcs WHERE {where}", params).fetchone()
            return _rpc(row) if row else None

        return self._read(read)

    def get_rpc(self, rpc_id):
        return self._rpc_where("id = ?", rpc_id)

    def rpc_by_request_id(self, device_id, request_id):
        if not is_int64(request_id):
            return defer.succeed(None)  # no RPC has such an id
        return self._rpc_where("device_id = ? AND request_id = ?", device_id, request_id)

    def set_rpc_status(self, rpc_id, status, response_json=None, expect=None):
        try:
            expect = check_status_change(status, response_json, expect)
        except BadRequest:
            return defer.fail()
        if expect is not None and not expect:
            return defer.succeed(False)  # no current status is expected
        sql, params = "UPDATE rpcs SET status = ?", [status]
        if response_json is not None:
            sql += ", response_json = ?"
            params.append(response_json)
        sql += " WHERE id = ?"
        params.append(rpc_id)
        if expect is not None:
            sql += f" AND status IN ({', '.join('?' * len(expect))})"
            params.extend(expect)

        def job(conn):
            return conn.execute(sql, params).rowcount > 0

        return self._write(job)

    def pending_rpcs(self, device_id=None):
        def read(conn):
            sql = f"SELECT {_RPC} FROM rpcs WHERE {_RPC_PENDING_SQL}"
            params = ()
            if device_id is not None:
                sql += " AND device_id = ?"
                params = (device_id,)
            return [_rpc(row) for row in conn.execute(sql + " ORDER BY device_id, request_id", params)]

        return self._read(read)

    def list_rpcs(self, device_id, limit, offset):
        if not (is_int64(limit, 0) and is_int64(offset, 0)):
            return defer.fail(BadRequest("limit and offset must be integers >= 0"))

        def read(conn):
            rows = conn.execute(
                f"SELECT {_RPC} FROM rpcs WHERE device_id = ? ORDER BY request_id DESC LIMIT ? OFFSET ?",
                (device_id, limit, offset),
            )
            items = [_rpc(row) for row in rows]
            return items, _one(conn, "SELECT count(*) FROM rpcs WHERE device_id = ?", device_id)

        return self._read(read)

    def delete_rpc(self, rpc_id):
        def job(conn):
            return conn.execute("DELETE FROM rpcs WHERE id = ?", (rpc_id,)).rowcount > 0

        return self._write(job)

    # -- customers ---------------------------------------------------------------------

    def add_customer(self, customer, key_digest):
        try:
            check_customer(customer, key_digest)
        except BadRequest:
            return defer.fail()

        def job(conn):
            if _one(conn, "SELECT 1 FROM customers WHERE key_digest = ?", key_digest):
                raise BadRequest("this API key is used by another customer")
            if _one(conn, "SELECT 1 FROM customers WHERE id = ?", customer.id):
                raise BadRequest("a customer with this id exists")
            if _one(conn, "SELECT 1 FROM customers WHERE title = ?", customer.title):
                raise DuplicateName(f"a customer titled {customer.title!r} exists")
            conn.execute(
                "INSERT INTO customers (id, title, created_time, key_digest) VALUES (?, ?, ?, ?)",
                (customer.id, customer.title, customer.created_time, key_digest),
            )
            return customer

        return self._write(job)

    def _customer_where(self, column, value):
        return self._row_as(Customer, f"SELECT {_CUSTOMER} FROM customers WHERE {column} = ?", value)

    def get_customer(self, customer_id):
        return self._customer_where("id", customer_id)

    def customer_by_title(self, title):
        sql = f"SELECT {_CUSTOMER} FROM customers WHERE title = ? ORDER BY created_time, id LIMIT 1"
        return self._row_as(Customer, sql, title)

    def customer_by_key_digest(self, key_digest):
        if not is_id(key_digest):
            return defer.succeed(None)
        return self._customer_where("key_digest", key_digest)

    def list_customers(self, limit, offset):
        return self._page("customers", _CUSTOMER, limit, offset, Customer)

    def set_device_customer(self, device_id, customer_id, expect_customer_id):
        try:
            check_owner_change(customer_id, expect_customer_id)
        except BadRequest:
            return defer.fail()

        def job(conn):
            _require_device(conn, device_id)
            if customer_id is not None:
                _require_customer(conn, customer_id)
            # compare-and-set: "IS" also matches NULL (a free device)
            cursor = conn.execute(
                "UPDATE devices SET customer_id = ? WHERE id = ? AND customer_id IS ?",
                (customer_id, device_id, expect_customer_id),
            )
            return cursor.rowcount > 0

        return self._write(job)

    def list_customer_devices(self, customer_id, limit, offset, text_search=None, sort_property="createdTime",
                              descending=False):
        return self._device_page("d.customer_id = ?", (customer_id,), limit, offset, text_search, sort_property,
                                 descending)

    # -- claim requests ------------------------------------------------------------------

    def put_claim_request(self, request, now):
        try:
            check_claim_request(request, now)
        except BadRequest:
            return defer.fail()

        def job(conn):
            _require_device(conn, request.device_id)
            sql = "SELECT expiration_time FROM claim_requests WHERE device_id = ?"
            expires = _one(conn, sql, request.device_id)
            if expires is not None and expires > now:
                return False  # the first request wins until it expires
            conn.execute(
                "INSERT OR REPLACE INTO claim_requests (device_id, secret, expiration_time) VALUES (?, ?, ?)",
                (request.device_id, request.secret, request.expiration_time),
            )
            return True

        return self._write(job)

    def get_claim_request(self, device_id):
        def read(conn):
            row = conn.execute(
                "SELECT device_id, secret, expiration_time FROM claim_requests WHERE device_id = ?", (device_id,)
            ).fetchone()
            return ClaimRequest(*row) if row else None

        return self._read(read)

    def delete_claim_request(self, device_id):
        def job(conn):
            return conn.execute("DELETE FROM claim_requests WHERE device_id = ?", (device_id,)).rowcount > 0

        return self._write(job)
