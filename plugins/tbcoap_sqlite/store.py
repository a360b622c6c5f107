"""SQLiteStore: the IStore on one SQLite file in WAL mode, in SQL.

Each writing call is a job ``job(conn)`` for the group commit, each reading call a function
``read(conn)`` run in a reader thread; the Database (database.py) owns the file, its threads
and their life cycle.
"""

import dataclasses
import re

from twisted.internet import defer
from zope.interface import implementer

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, NotFound
from tbcoap.interfaces import IStore
from tbcoap.models import PROVISION_TYPES, ClaimRequest, Credentials, Customer, Device, DeviceProfile, Rpc, now_ms
from tbcoap.storekit import (
    DEVICE_SORT_PROPERTIES,
    check_claim_request,
    check_credentials,
    check_customer,
    check_device_query,
    check_owner_change,
    check_page,
    check_rpc,
    check_status_change,
    is_id,
    is_int64,
)

from .database import Database
from .management import ManagementCalls
from .ingest import SeriesBounds
from .ota import OtaCalls
from .sql import one, require_device
from .rollups import RollupCalls
from .telemetry import TelemetryCalls

_DEVICE = ("d.id, d.name, d.type, d.label, d.created_time, d.customer_id, d.additional_info,"
           " d.transport_configuration")
_PROFILE = "id, name, provision_type, provision_key, provision_secret, created_time, transport_configuration"
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
def _rpc(row):
    (id_, device_id, request_id, method, params, oneway, persistent, expires, created, status, response) = row
    return Rpc(
        id=id_, device_id=device_id, request_id=request_id, method=method, params_json=params,
        oneway=bool(oneway), persistent=bool(persistent), expiration_time=expires,
        created_time=created, status=status, response_json=response,
    )


def _require_customer(conn, customer_id):
    if one(conn, "SELECT 1 FROM customers WHERE id = ?", customer_id) is None:
        raise NotFound(f"no customer with id {customer_id}")


@implementer(IStore)
class SQLiteStore(TelemetryCalls, RollupCalls, ManagementCalls, OtaCalls):
    """Devices, credentials, profiles, telemetry, attributes, RPCs, customers, claim
    requests and provisioned marks in one SQLite file."""

    name = "sqlite"
    backup_type = ("application/vnd.sqlite3", "sqlite3")  # what backup() writes: media type, file suffix

    def __init__(self, path, sync="normal", busy_timeout=5.0, read_threads=4, max_queue=10000, reactor=None):
        self.path = path
        self.database = Database(path, sync=sync, busy_timeout=busy_timeout, read_threads=read_threads,
                                 max_queue=max_queue, reactor=reactor)
        self.commit_latency = self.database.commit_latency
        self._write = self.database.write  # job(conn) in the next group commit
        self._read = self.database.read  # fn(conn, *args) in a reader thread
        self._series_bounds = SeriesBounds()  # what ts_kv_series holds, known to the writer thread
        self.database.on_rollback.append(self._series_bounds.forget)

    # -- life cycle (database.py) ------------------------------------------------

    def open(self):
        return self.database.open()

    def close(self):
        return self.database.close()

    def check(self):
        return self.database.check()

    def backup(self, path):
        """A consistent copy of the file into the new file ``path``, taken while writes go on."""
        return self.database.backup(path)

    def stats(self):
        return self.database.stats()

    def bus(self):
        """None: one node uses a SQLite file alone."""
        return None

    # -- devices and profiles --------------------------------------------------

    def add_device(self, device, token):
        if not isinstance(token, str) or not token:
            return defer.fail(BadRequest("an access token is required"))

        def job(conn):
            if one(conn, "SELECT 1 FROM devices WHERE name = ?", device.name):
                raise DuplicateName(f"a device named {device.name!r} exists")
            if one(conn, "SELECT 1 FROM credentials WHERE token = ?", token):
                raise DuplicateToken("this access token is used by another device")
            conn.execute(
                "INSERT INTO devices (id, name, type, label, created_time, customer_id, additional_info,"
                " transport_configuration) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device.id, device.name, device.type, device.label, device.created_time, device.customer_id,
                 device.additional_info, device.transport_configuration),
            )
            conn.execute("INSERT INTO credentials (token, device_id) VALUES (?, ?)", (token, device.id))
            return device

        return self._write(job)

    def update_device(self, device):
        def job(conn):
            require_device(conn, device.id)
            owner = one(conn, "SELECT id FROM devices WHERE name = ?", device.name)
            if owner is not None and owner != device.id:
                raise DuplicateName(f"a device named {device.name!r} exists")
            conn.execute("UPDATE devices SET name = ?, type = ?, label = ?, additional_info = ?,"
                         " transport_configuration = ? WHERE id = ?",
                         (device.name, device.type, device.label, device.additional_info,
                          device.transport_configuration, device.id))
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
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()

        def read(conn):
            rows = conn.execute(
                f"SELECT {columns} FROM {table} ORDER BY created_time, id LIMIT ? OFFSET ?", (limit, offset)
            )
            items = [build(*row) for row in rows]
            return items, one(conn, f"SELECT count(*) FROM {table}")

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
            return items, one(conn, f"SELECT count(*) FROM devices d{condition}", *params)

        return self._read(read)

    def delete_device(self, device_id):
        def job(conn):
            self._series_bounds.forget()
            for table in (
                "credentials", "ts_kv", "ts_kv_latest", "ts_kv_series", "attributes", "rpcs", "rpc_counters", "claim_requests",
                "ts_kv_rollup", "ts_kv_dirty",
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
            require_device(conn, device_id)
            owner = one(conn, "SELECT device_id FROM credentials WHERE token = ?", credentials.id)
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
            if one(conn, "SELECT 1 FROM device_profiles WHERE name = ?", profile.name):
                raise DuplicateName(f"a device profile named {profile.name!r} exists")
            key = profile.provision_key
            if key is not None and one(conn, "SELECT 1 FROM device_profiles WHERE provision_key = ?", key):
                raise BadRequest("this provision key is used by another device profile")
            conn.execute(
                f"INSERT INTO device_profiles ({_PROFILE}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (profile.id, profile.name, profile.provision_type, key, profile.provision_secret,
                 profile.created_time, profile.transport_configuration),
            )
            return profile

        return self._write(job)

    def update_profile(self, profile):
        if profile.provision_type not in PROVISION_TYPES:
            return defer.fail(BadRequest(f"unknown provision type {profile.provision_type!r}"))

        def job(conn):
            old = one(conn, "SELECT name FROM device_profiles WHERE id = ?", profile.id)
            if old is None:
                raise NotFound(f"no device profile with id {profile.id}")
            if one(conn, "SELECT 1 FROM device_profiles WHERE name = ? AND id != ?", profile.name, profile.id):
                raise DuplicateName(f"a device profile named {profile.name!r} exists")
            key = profile.provision_key
            if key is not None and one(conn, "SELECT 1 FROM device_profiles WHERE provision_key = ? AND id != ?",
                                        key, profile.id):
                raise BadRequest("this provision key is used by another device profile")
            conn.execute("UPDATE device_profiles SET name = ?, provision_type = ?, provision_key = ?,"
                         " provision_secret = ?, transport_configuration = ? WHERE id = ?",
                         (profile.name, profile.provision_type, key, profile.provision_secret,
                          profile.transport_configuration, profile.id))
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
            require_device(conn, device_id)
            cursor = conn.execute(
                "INSERT OR IGNORE INTO attributes (device_id, scope, key, kind, value, last_update_ts)"
                " VALUES (?, 'SERVER_SCOPE', 'provisionState', 'STRING', 'provisioned', ?)", (device_id, now_ms()))
            return cursor.rowcount > 0

        return self._write(job)

    # -- server-side RPCs ----------------------------------------------------------

    def add_rpc(self, rpc):
        try:
            check_rpc(rpc)
        except BadRequest:
            return defer.fail()

        def job(conn):
            require_device(conn, rpc.device_id)
            if one(conn, "SELECT 1 FROM rpcs WHERE id = ?", rpc.id):
                raise BadRequest("an RPC with this id exists")
            # The counter and the row commit together: an id is used once or not at all.
            conn.execute(_COUNTER_BUMP, (rpc.device_id,))
            request_id = one(
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
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()

        def read(conn):
            rows = conn.execute(
                f"SELECT {_RPC} FROM rpcs WHERE device_id = ? ORDER BY request_id DESC LIMIT ? OFFSET ?",
                (device_id, limit, offset),
            )
            items = [_rpc(row) for row in rows]
            return items, one(conn, "SELECT count(*) FROM rpcs WHERE device_id = ?", device_id)

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
            if one(conn, "SELECT 1 FROM customers WHERE key_digest = ?", key_digest):
                raise BadRequest("this API key is used by another customer")
            if one(conn, "SELECT 1 FROM customers WHERE id = ?", customer.id):
                raise BadRequest("a customer with this id exists")
            if one(conn, "SELECT 1 FROM customers WHERE title = ?", customer.title):
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
            require_device(conn, device_id)
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
            require_device(conn, request.device_id)
            sql = "SELECT expiration_time FROM claim_requests WHERE device_id = ?"
            expires = one(conn, sql, request.device_id)
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
