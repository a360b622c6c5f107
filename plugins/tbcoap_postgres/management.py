"""The PostgreSQL store's calls that remove customers and profiles and choose the default profile
(mixed into PostgresStore, whose ``run_read`` and ``run_write`` run them on the reader pool and the
writer)."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.models import DeviceProfile

_PROFILE = ("p.id, p.name, p.provision_type, p.provision_key, p.provision_secret, p.created_time,"
            " p.transport_configuration")


def _profile(row):
    return DeviceProfile(*row) if row else None


class ManagementMixin:
    """delete_customer, get_profile, default_profile, set_default_profile, delete_profile."""

    def get_profile(self, profile_id):
        def read(conn):
            return _profile(conn.execute(f"SELECT {_PROFILE} FROM device_profiles p WHERE p.id = %s",
                                         (profile_id,)).fetchone())

        return self.run_read(read)

    def default_profile(self):
        def read(conn):
            return _profile(conn.execute(f"SELECT {_PROFILE} FROM default_profile x"
                                         " JOIN device_profiles p ON p.id = x.profile_id").fetchone())

        return self.run_read(read)

    def set_default_profile(self, profile_id):
        def job(conn):
            row = conn.execute(f"SELECT {_PROFILE} FROM device_profiles p WHERE p.id = %s FOR KEY SHARE",
                               (profile_id,)).fetchone()
            if row is None:
                raise NotFound(f"no device profile with id {profile_id}")
            conn.execute("INSERT INTO default_profile (one, profile_id) VALUES (1, %s)"
                         " ON CONFLICT (one) DO UPDATE SET profile_id = excluded.profile_id", (profile_id,))
            return _profile(row)

        return self.run_write(job)

    def delete_profile(self, profile_id):
        def job(conn):
            row = conn.execute("SELECT name FROM device_profiles WHERE id = %s FOR UPDATE", (profile_id,)).fetchone()
            if row is None:
                return False
            # the default's row is locked too: choosing another default meanwhile waits for this decision
            if conn.execute("SELECT 1 FROM default_profile WHERE profile_id = %s FOR UPDATE", (profile_id,)).fetchone():
                raise BadRequest("the default device profile cannot be deleted: make another the default first")
            if conn.execute("SELECT 1 FROM devices WHERE type = %s LIMIT 1", (row[0],)).fetchone():
                raise BadRequest(f"device profile {row[0]!r} is used by devices: change or delete them first")
            conn.execute("DELETE FROM device_profiles WHERE id = %s", (profile_id,))
            return True

        return self.run_write(job)

    def delete_customer(self, customer_id):
        if not isinstance(customer_id, str):
            return defer.succeed(False)

        def job(conn):
            # the customer's row goes first: an owner change of another node that checked the customer
            # (FOR KEY SHARE) is waited for, and a later one finds no customer; then its devices are freed
            gone = conn.execute("DELETE FROM customers WHERE id = %s", (customer_id,)).rowcount > 0
            conn.execute("UPDATE devices SET customer_id = NULL WHERE customer_id = %s", (customer_id,))
            return gone

        return self.run_write(job)
