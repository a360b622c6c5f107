"""The SQLite store's calls that remove customers and profiles and choose the default profile."""

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.models import DeviceProfile

from .sql import one

_PROFILE = ("p.id, p.name, p.provision_type, p.provision_key, p.provision_secret, p.created_time,"
            " p.transport_configuration")


def _profile(row):
    return DeviceProfile(*row) if row else None


class ManagementCalls:
    """Mixed into SQLiteStore: ``self._read`` and ``self._write`` are the Database's."""

    def get_profile(self, profile_id):
        def read(conn):
            return _profile(conn.execute(f"SELECT {_PROFILE} FROM device_profiles p WHERE p.id = ?",
                                         (profile_id,)).fetchone())

        return self._read(read)

    def default_profile(self):
        def read(conn):
            return _profile(conn.execute(f"SELECT {_PROFILE} FROM default_profile x"
                                         " JOIN device_profiles p ON p.id = x.profile_id").fetchone())

        return self._read(read)

    def set_default_profile(self, profile_id):
        def job(conn):
            row = conn.execute(f"SELECT {_PROFILE} FROM device_profiles p WHERE p.id = ?", (profile_id,)).fetchone()
            if row is None:
                raise NotFound(f"no device profile with id {profile_id}")
            conn.execute("INSERT INTO default_profile (one, profile_id) VALUES (1, ?)"
                         " ON CONFLICT (one) DO UPDATE SET profile_id = excluded.profile_id", (profile_id,))
            return _profile(row)

        return self._write(job)

    def delete_profile(self, profile_id):
        def job(conn):
            name = one(conn, "SELECT name FROM device_profiles WHERE id = ?", profile_id)
            if name is None:
                return False
            if one(conn, "SELECT 1 FROM default_profile WHERE profile_id = ?", profile_id):
                raise BadRequest("the default device profile cannot be deleted: make another the default first")
            if one(conn, "SELECT 1 FROM devices WHERE type = ? LIMIT 1", name):  # devices_by_type
                raise BadRequest(f"device profile {name!r} is used by devices: change or delete them first")
            conn.execute("DELETE FROM device_profiles WHERE id = ?", (profile_id,))
            return True

        return self._write(job)

    def delete_customer(self, customer_id):
        if not isinstance(customer_id, str):
            return defer.succeed(False)

        def job(conn):
            conn.execute("UPDATE devices SET customer_id = NULL WHERE customer_id = ?", (customer_id,))
            return conn.execute("DELETE FROM customers WHERE id = ?", (customer_id,)).rowcount > 0

        return self._write(job)
