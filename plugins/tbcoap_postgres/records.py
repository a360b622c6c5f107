"""Devices, credentials, profiles, attributes, RPCs, customers and claim requests on PostgreSQL.

Each write is a job for the writer: it checks first (so a refusal names what is wrong) and then
writes; unique constraints catch what another node wrote meanwhile.  Decisions between nodes are
single statements: compare-and-set is an ``UPDATE ... WHERE``, an RPC's request id comes from an
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on the device's counter row.
"""

from __future__ import annotations

import dataclasses
import re

from twisted.internet import defer

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, NotFound
from tbcoap.models import (PROVISION_TYPES, ClaimRequest, Credentials, Customer, Device, DeviceProfile, Rpc,
                           now_ms)
from tbcoap.storekit import (DEVICE_SORT_PROPERTIES, check, check_claim_request, check_credentials, check_customer,
                             check_device_query, check_scope, check_owner_change, check_page, check_rpc, check_status_change,
                             check_values, is_id, is_int64, key_list)

from .values import COLUMNS, check_text, columns, value

_DEVICE = ("d.id, d.name, d.type, d.label, d.created_time, d.customer_id, d.additional_info,"
           " d.transport_configuration")
_PROFILE = "id, name, provision_type, provision_key, provision_secret, created_time, transport_configuration"
_CUSTOMER = "id, title, created_time"
_RPC = ("id, device_id, request_id, method, params_json, oneway, persistent, expiration_time, created_time, status,"
        " response_json")
_DEVICE_SORT = {"createdTime": "d.created_time", "name": "d.name", "type": "d.type", "label": "d.label"}
assert set(_DEVICE_SORT) == set(DEVICE_SORT_PROPERTIES)
_LIKE_SPECIAL = re.compile(r"[%_\\]")
_DEVICE_TABLES = ("credentials", "attributes", "rpcs", "rpc_counters", "claim_requests", "ts_kv_latest")


def _one(conn, sql, *params):
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def require_device(conn, device_id):
    """NotFound unless the device exists; its row stays locked against deletion until the commit."""
    if _one(conn, "SELECT 1 FROM devices WHERE id = %s FOR KEY SHARE", device_id) is None:
        raise NotFound(f"no device with id {device_id}")


def _require_customer(conn, customer_id):
    if _one(conn, "SELECT 1 FROM customers WHERE id = %s FOR KEY SHARE", customer_id) is None:
        raise NotFound(f"no customer with id {customer_id}")


def _checked(*texts):
    for text in texts:
        if isinstance(text, str):
            check_text(text)


class RecordsMixin:
    """The device, profile, attribute, RPC, customer, claim and provisioning parts of PostgresStore."""

    def _row_as(self, model, sql, *params):
        def read(conn):
            row = conn.execute(sql, params).fetchone()
            return model(*row) if row else None

        return self.run_read(read)

    # -- devices ---------------------------------------------------------------------------

    def add_device(self, device, token):
        if not is_id(token):
            return defer.fail(BadRequest("an access token is required"))
        try:
            _checked(device.id, device.name, device.type, device.label, device.additional_info, token)
        except BadRequest:
            return defer.fail()

        def job(conn):
            if _one(conn, "SELECT 1 FROM devices WHERE name = %s", device.name):
                raise DuplicateName(f"a device named {device.name!r} exists")
            if _one(conn, "SELECT 1 FROM credentials WHERE id = %s", token):
                raise DuplicateToken("this access token is used by another device")
            conn.execute("INSERT INTO devices (id, name, type, label, created_time, customer_id, additional_info, fold,"
                         " transport_configuration) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (device.id, device.name, device.type, device.label, device.created_time, device.customer_id,
                          device.additional_info, device.name.casefold(), device.transport_configuration))
            conn.execute("INSERT INTO credentials (id, device_id, type) VALUES (%s, %s, 'ACCESS_TOKEN')",
                         (token, device.id))
            return device

        return self.run_write(job)

    def update_device(self, device):
        try:
            _checked(device.name, device.type, device.label, device.additional_info)
        except BadRequest:
            return defer.fail()

        def job(conn):
            owner = _one(conn, "SELECT id FROM devices WHERE name = %s", device.name)
            if owner is not None and owner != device.id:
                raise DuplicateName(f"a device named {device.name!r} exists")
            row = conn.execute(f"UPDATE devices d SET name = %s, type = %s, label = %s, additional_info = %s, fold = %s,"
                               f" transport_configuration = %s WHERE id = %s RETURNING {_DEVICE}",
                               (device.name, device.type, device.label, device.additional_info,
                                device.name.casefold(), device.transport_configuration, device.id)).fetchone()
            if row is None:
                raise NotFound(f"no device with id {device.id}")
            return Device(*row)

        return self.run_write(job)

    def get_device(self, device_id):
        return self._row_as(Device, f"SELECT {_DEVICE} FROM devices d WHERE d.id = %s", device_id)

    def device_by_name(self, name):
        return self._row_as(Device, f"SELECT {_DEVICE} FROM devices d WHERE d.name = %s", name)

    def device_by_credentials(self, credentials_type, credentials_id):
        if not is_id(credentials_id):
            return defer.succeed(None)
        return self._row_as(Device, f"SELECT {_DEVICE} FROM credentials c JOIN devices d ON d.id = c.device_id"
                                    " WHERE c.id = %s AND c.type = %s", credentials_id, credentials_type)

    def list_devices(self, limit, offset, text_search=None, sort_property="createdTime", descending=False):
        return self._device_page("", (), limit, offset, text_search, sort_property, descending)

    def list_customer_devices(self, customer_id, limit, offset, text_search=None, sort_property="createdTime",
                              descending=False):
        return self._device_page("d.customer_id = %s", (customer_id,), limit, offset, text_search, sort_property,
                                 descending)

    def _device_page(self, where, params, limit, offset, text_search, sort_property, descending):
        try:
            check_device_query(limit, offset, text_search, sort_property)
        except BadRequest:
            return defer.fail()
        terms, params = ([where] if where else []), list(params)
        if text_search:
            terms.append("d.fold LIKE %s")  # the folded name holds the folded text, % and _ as themselves
            params.append("%" + _LIKE_SPECIAL.sub(r"\\\g<0>", text_search.casefold()) + "%")
        condition = f" WHERE {' AND '.join(terms)}" if terms else ""
        order = "DESC NULLS LAST" if descending else "ASC NULLS FIRST"
        direction = "DESC" if descending else "ASC"

        def read(conn):
            rows = conn.execute(f"SELECT {_DEVICE} FROM devices d{condition}"
                                f" ORDER BY {_DEVICE_SORT[sort_property]} {order}, d.id {direction} LIMIT %s OFFSET %s",
                                (*params, limit, offset))
            items = [Device(*row) for row in rows]
            return items, _one(conn, f"SELECT count(*) FROM devices d{condition}", *params)

        return self.run_read(read)

    def delete_device(self, device_id):
        def job(conn):
            if conn.execute("DELETE FROM devices WHERE id = %s", (device_id,)).rowcount == 0:
                return False
            for table in _DEVICE_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE device_id = %s", (device_id,))
            # the history goes in the background (retention), a few thousand rows at a time
            conn.execute("INSERT INTO ts_kv_purge (series) SELECT id FROM series WHERE device_id = %s"
                         " ON CONFLICT DO NOTHING", (device_id,))
            conn.execute("DELETE FROM ts_kv_dirty WHERE series IN (SELECT id FROM series WHERE device_id = %s)",
                         (device_id,))
            conn.execute("DELETE FROM series WHERE device_id = %s", (device_id,))
            return True

        return self.run_write(job)

    def get_credentials(self, device_id):
        return self._row_as(Credentials, "SELECT type, id, value FROM credentials WHERE device_id = %s", device_id)

    def set_credentials(self, device_id, credentials):
        try:
            check_credentials(credentials)
            _checked(credentials.id, credentials.value)
        except BadRequest:
            return defer.fail()

        def job(conn):
            require_device(conn, device_id)
            owner = _one(conn, "SELECT device_id FROM credentials WHERE id = %s", credentials.id)
            if owner is not None and owner != device_id:
                raise DuplicateToken("these credentials are used by another device")
            conn.execute("DELETE FROM credentials WHERE device_id = %s", (device_id,))
            conn.execute("INSERT INTO credentials (id, device_id, type, value) VALUES (%s, %s, %s, %s)",
                         (credentials.id, device_id, credentials.type, credentials.value))

        return self.run_write(job)

    # -- profiles ------------------------------------------------------------------------------

    def _check_profile(self, profile):
        check(profile.provision_type in PROVISION_TYPES, f"unknown provision type {profile.provision_type!r}")
        _checked(profile.id, profile.name, profile.provision_key, profile.provision_secret)

    def add_profile(self, profile):
        try:
            self._check_profile(profile)
        except BadRequest:
            return defer.fail()

        def job(conn):
            if _one(conn, "SELECT 1 FROM device_profiles WHERE name = %s", profile.name):
                raise DuplicateName(f"a device profile named {profile.name!r} exists")
            key = profile.provision_key
            if key is not None and _one(conn, "SELECT 1 FROM device_profiles WHERE provision_key = %s", key):
                raise BadRequest("this provision key is used by another device profile")
            conn.execute(f"INSERT INTO device_profiles ({_PROFILE}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (profile.id, profile.name, profile.provision_type, key, profile.provision_secret,
                          profile.created_time, profile.transport_configuration))
            return profile

        return self.run_write(job)

    def update_profile(self, profile):
        try:
            self._check_profile(profile)
        except BadRequest:
            return defer.fail()

        def job(conn):
            old = _one(conn, "SELECT name FROM device_profiles WHERE id = %s FOR UPDATE", profile.id)
            if old is None:
                raise NotFound(f"no device profile with id {profile.id}")
            if _one(conn, "SELECT 1 FROM device_profiles WHERE name = %s AND id <> %s", profile.name, profile.id):
                raise DuplicateName(f"a device profile named {profile.name!r} exists")
            key = profile.provision_key
            if key is not None and _one(conn, "SELECT 1 FROM device_profiles WHERE provision_key = %s AND id <> %s",
                                        key, profile.id):
                raise BadRequest("this provision key is used by another device profile")
            row = conn.execute(f"UPDATE device_profiles SET name = %s, provision_type = %s, provision_key = %s,"
                               f" provision_secret = %s, transport_configuration = %s WHERE id = %s RETURNING {_PROFILE}",
                               (profile.name, profile.provision_type, key, profile.provision_secret,
                                profile.transport_configuration, profile.id)).fetchone()
            if old != profile.name:
                conn.execute("UPDATE devices SET type = %s WHERE type = %s", (profile.name, old))
            return DeviceProfile(*row)

        return self.run_write(job)

    def profile_by_name(self, name):
        return self._row_as(DeviceProfile, f"SELECT {_PROFILE} FROM device_profiles WHERE name = %s", name)

    def profile_by_provision_key(self, key):
        if not is_id(key):
            return defer.succeed(None)  # a missing or empty key matches no profile
        return self._row_as(DeviceProfile, f"SELECT {_PROFILE} FROM device_profiles WHERE provision_key = %s", key)

    def _page(self, table, columns_, limit, offset, build):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()

        def read(conn):
            rows = conn.execute(f"SELECT {columns_} FROM {table} ORDER BY created_time, id LIMIT %s OFFSET %s",
                                (limit, offset))
            items = [build(*row) for row in rows]
            return items, _one(conn, f"SELECT count(*) FROM {table}")

        return self.run_read(read)

    def list_profiles(self, limit, offset):
        return self._page("device_profiles", _PROFILE, limit, offset, DeviceProfile)

    def mark_provisioned(self, device_id):
        def job(conn):
            require_device(conn, device_id)
            return conn.execute(
                "INSERT INTO attributes (device_id, scope, key, last_update_ts, s)"
                " VALUES (%s, 'SERVER_SCOPE', 'provisionState', %s, 'provisioned') ON CONFLICT DO NOTHING",
                (device_id, now_ms())).rowcount > 0

        return self.run_write(job)

    # -- attributes --------------------------------------------------------------------------------

    def save_attributes(self, device_id, scope, values, ts):
        try:
            check_scope(scope)
            check(is_int64(ts), f"timestamp must be a 64-bit integer, not {ts!r}")
            rows = []
            for key, kind, data in sorted(check_values(values)):
                check_text(key)
                rows.append((device_id, scope, key, ts, *columns(kind, data)))
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)

        def job(conn):
            require_device(conn, device_id)
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO attributes (device_id, scope, key, last_update_ts, {COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, scope, key) DO UPDATE"
                    " SET last_update_ts = excluded.last_update_ts, l = excluded.l, d = excluded.d, b = excluded.b,"
                    " s = excluded.s, j = excluded.j", rows)

        return self.run_write(job)

    def get_attributes(self, device_id, scope, keys):
        try:
            check_scope(scope)
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)
        if keys == []:
            return defer.succeed({})

        def read(conn):
            sql = f"SELECT key, last_update_ts, {COLUMNS} FROM attributes WHERE device_id = %s AND scope = %s"
            if keys is None:
                rows = conn.execute(sql, (device_id, scope))
            else:
                rows = conn.execute(sql + " AND key = ANY(%s)", (device_id, scope, keys))
            return {key: (value(*cols), ts) for key, ts, *cols in rows}

        return self.run_read(read)

    def delete_attributes(self, device_id, scope, keys):
        try:
            check_scope(scope)
            check(keys is not None, "the keys to delete are required")
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            require_device(conn, device_id)
            rows = conn.execute("DELETE FROM attributes WHERE device_id = %s AND scope = %s AND key = ANY(%s)"
                                " RETURNING key", (device_id, scope, keys)).fetchall()
            gone = {key for (key,) in rows}
            return [key for key in keys if key in gone]

        return self.run_write(job)

    # -- server-side RPCs ----------------------------------------------------------------------------

    def add_rpc(self, rpc):
        try:
            check_rpc(rpc)
            _checked(rpc.id, rpc.method, rpc.params_json, rpc.response_json)
        except BadRequest:
            return defer.fail()

        def job(conn):
            require_device(conn, rpc.device_id)
            if _one(conn, "SELECT 1 FROM rpcs WHERE id = %s", rpc.id):
                raise BadRequest("an RPC with this id exists")
            # the counter row is locked until the commit: one id sequence per device, across nodes
            request_id = _one(conn, "INSERT INTO rpc_counters (device_id, last_request_id) VALUES (%s, 1)"
                                    " ON CONFLICT (device_id) DO UPDATE SET last_request_id ="
                                    " rpc_counters.last_request_id + 1 RETURNING last_request_id", rpc.device_id)
            stored = dataclasses.replace(rpc, request_id=request_id)
            conn.execute(f"INSERT INTO rpcs ({_RPC}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (stored.id, stored.device_id, request_id, stored.method, stored.params_json, stored.oneway,
                          stored.persistent, stored.expiration_time, stored.created_time, stored.status,
                          stored.response_json))
            return stored

        return self.run_write(job)

    def get_rpc(self, rpc_id):
        if not isinstance(rpc_id, str):
            return defer.succeed(None)
        return self._row_as(Rpc, f"SELECT {_RPC} FROM rpcs WHERE id = %s", rpc_id)

    def rpc_by_request_id(self, device_id, request_id):
        if not is_int64(request_id) or not isinstance(device_id, str):
            return defer.succeed(None)  # no RPC has such an id
        return self._row_as(Rpc, f"SELECT {_RPC} FROM rpcs WHERE device_id = %s AND request_id = %s",
                            device_id, request_id)

    def set_rpc_status(self, rpc_id, status, response_json=None, expect=None):
        try:
            expect = check_status_change(status, response_json, expect)
            _checked(response_json)
        except BadRequest:
            return defer.fail()
        if expect is not None and not expect:
            return defer.succeed(False)  # no current status is expected
        sql, params = "UPDATE rpcs SET status = %s", [status]
        if response_json is not None:
            sql += ", response_json = %s"
            params.append(response_json)
        sql += " WHERE id = %s"
        params.append(rpc_id)
        if expect is not None:
            sql += " AND status = ANY(%s)"  # compare-and-set: one statement, decided under the row's lock
            params.append(expect)

        def job(conn):
            return conn.execute(sql, params).rowcount > 0

        return self.run_write(job)

    def pending_rpcs(self, device_id=None):
        def read(conn):
            sql = f"SELECT {_RPC} FROM rpcs WHERE status IN ('QUEUED', 'SENT', 'DELIVERED')"
            if device_id is None:
                return [Rpc(*row) for row in conn.execute(sql + " ORDER BY device_id, request_id")]
            return [Rpc(*row) for row in conn.execute(sql + " AND device_id = %s ORDER BY request_id", (device_id,))]

        return self.run_read(read)

    def list_rpcs(self, device_id, limit, offset):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()

        def read(conn):
            rows = conn.execute(f"SELECT {_RPC} FROM rpcs WHERE device_id = %s ORDER BY request_id DESC"
                                " LIMIT %s OFFSET %s", (device_id, limit, offset))
            items = [Rpc(*row) for row in rows]
            return items, _one(conn, "SELECT count(*) FROM rpcs WHERE device_id = %s", device_id)

        return self.run_read(read)

    def delete_rpc(self, rpc_id):
        return self.run_write(lambda conn: conn.execute("DELETE FROM rpcs WHERE id = %s", (rpc_id,)).rowcount > 0)

    # -- customers -------------------------------------------------------------------------------------

    def add_customer(self, customer, key_digest):
        try:
            check_customer(customer, key_digest)
            _checked(customer.id, customer.title, key_digest)
        except BadRequest:
            return defer.fail()

        def job(conn):
            if _one(conn, "SELECT 1 FROM customers WHERE key_digest = %s", key_digest):
                raise BadRequest("this API key is used by another customer")
            if _one(conn, "SELECT 1 FROM customers WHERE id = %s", customer.id):
                raise BadRequest("a customer with this id exists")
            if _one(conn, "SELECT 1 FROM customers WHERE title = %s", customer.title):
                raise DuplicateName(f"a customer titled {customer.title!r} exists")
            conn.execute("INSERT INTO customers (id, title, created_time, key_digest) VALUES (%s, %s, %s, %s)",
                         (customer.id, customer.title, customer.created_time, key_digest))
            return customer

        return self.run_write(job)

    def get_customer(self, customer_id):
        return self._row_as(Customer, f"SELECT {_CUSTOMER} FROM customers WHERE id = %s", customer_id)

    def customer_by_title(self, title):
        return self._row_as(Customer, f"SELECT {_CUSTOMER} FROM customers WHERE title = %s"
                                      " ORDER BY created_time, id LIMIT 1", title)

    def customer_by_key_digest(self, key_digest):
        if not is_id(key_digest):
            return defer.succeed(None)
        return self._row_as(Customer, f"SELECT {_CUSTOMER} FROM customers WHERE key_digest = %s", key_digest)

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
            # compare-and-set: IS NOT DISTINCT FROM also matches NULL (a free device)
            return conn.execute("UPDATE devices SET customer_id = %s WHERE id = %s"
                                " AND customer_id IS NOT DISTINCT FROM %s",
                                (customer_id, device_id, expect_customer_id)).rowcount > 0

        return self.run_write(job)

    # -- claim requests --------------------------------------------------------------------------------

    def put_claim_request(self, request, now):
        try:
            check_claim_request(request, now)
            _checked(request.secret)
        except BadRequest:
            return defer.fail()

        def job(conn):
            require_device(conn, request.device_id)
            # the first request wins until it expires: decided by the one statement, under the row's lock
            return conn.execute(
                "INSERT INTO claim_requests (device_id, secret, expiration_time) VALUES (%s, %s, %s)"
                " ON CONFLICT (device_id) DO UPDATE SET secret = excluded.secret,"
                " expiration_time = excluded.expiration_time WHERE claim_requests.expiration_time <= %s",
                (request.device_id, request.secret, request.expiration_time, now)).rowcount > 0

        return self.run_write(job)

    def get_claim_request(self, device_id):
        return self._row_as(ClaimRequest, "SELECT device_id, secret, expiration_time FROM claim_requests"
                                          " WHERE device_id = %s", device_id)

    def delete_claim_request(self, device_id):
        return self.run_write(lambda conn: conn.execute("DELETE FROM claim_requests WHERE device_id = %s",
                                                     (device_id,)).rowcount > 0)
