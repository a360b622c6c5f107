"""The SQLite store's OTA calls: packages, their data in chunks (one row of at most OTA_CHUNK bytes
each, read by range with incremental blob I/O) and their assignment to profiles and devices."""

import dataclasses

from twisted.internet import defer

from tbcoap.errors import BadRequest, DuplicateName, NotFound
from tbcoap.models import Device, OtaPackage
from tbcoap.storekit import (check_ota_assignment, check_ota_chunk, check_ota_data, check_ota_package,
                             check_ota_range, check_page, is_id, ota_chunks)

from .sql import one

_PACKAGE = ("id, title, version, type, device_profile_id, tag, created_time, file_name, content_type, data_size,"
            " checksum_algorithm, checksum, data_id")
_DEVICE = "d.id, d.name, d.type, d.label, d.created_time, d.customer_id, d.additional_info"


def _package(row):
    return OtaPackage(*row) if row else None


def _get(conn, package_id):
    return _package(conn.execute(f"SELECT {_PACKAGE} FROM ota_packages WHERE id = ?", (package_id,)).fetchone())


# The devices whose package of a type is this one: their own, or their profile's without their own.
_EFFECTIVE = (
    "FROM devices d WHERE d.id IN (SELECT entity_id FROM ota_assignments WHERE package_id = :p)"
    " OR (d.type = (SELECT p.name FROM device_profiles p JOIN ota_assignments a ON a.entity_id = p.id"
    "   WHERE a.package_id = :p AND a.type = :t)"
    "  AND NOT EXISTS (SELECT 1 FROM ota_assignments o WHERE o.entity_id = d.id AND o.type = :t))"
)


class OtaCalls:
    """Mixed into SQLiteStore: ``self._read`` and ``self._write`` are the Database's."""

    def add_ota_package(self, package):
        try:
            check_ota_package(package)
        except BadRequest:
            return defer.fail()
        package = dataclasses.replace(package, file_name=None, content_type=None, data_size=None,
                                      checksum_algorithm=None, checksum=None, data_id=None)

        def job(conn):
            if one(conn, "SELECT 1 FROM device_profiles WHERE id = ?", package.device_profile_id) is None:
                raise NotFound(f"no device profile with id {package.device_profile_id}")
            if one(conn, "SELECT 1 FROM ota_packages WHERE title = ? AND version = ? AND type = ?"
                         " AND device_profile_id = ?", package.title, package.version, package.type,
                   package.device_profile_id):
                raise DuplicateName("an OTA package with such title, version, type and profile already exists")
            conn.execute(f"INSERT INTO ota_packages ({_PACKAGE}) VALUES ({', '.join('?' * 13)})",
                         dataclasses.astuple(package))
            return package

        return self._write(job)

    def get_ota_package(self, package_id):
        if not is_id(package_id):
            return defer.succeed(None)
        return self._read(_get, package_id)

    def list_ota_packages(self, limit, offset, profile_id=None, ota_type=None):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()
        where, params = "", ()
        if profile_id is not None:
            where, params = " WHERE device_profile_id = ? AND type = ? AND data_id IS NOT NULL", (profile_id, ota_type)

        def read(conn):
            total = one(conn, f"SELECT count(*) FROM ota_packages{where}", *params)
            rows = conn.execute(f"SELECT {_PACKAGE} FROM ota_packages{where} ORDER BY created_time, id"
                                " LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
            return [_package(row) for row in rows], total

        return self._read(read)

    def write_ota_chunk(self, upload_id, index, data):
        try:
            check_ota_chunk(upload_id, index, data)
        except BadRequest:
            return defer.fail()
        data = bytes(data)

        def job(conn):
            conn.execute("INSERT INTO ota_chunks (data_id, idx, data) VALUES (?, ?, ?)"
                         " ON CONFLICT (data_id, idx) DO UPDATE SET data = excluded.data", (upload_id, index, data))

        return self._write(job)

    def finish_ota_data(self, package):
        try:
            check_ota_data(package)
        except BadRequest:
            return defer.fail()

        def job(conn):
            stored = _get(conn, package.id)
            refusal = None
            if stored is None:
                refusal = NotFound(f"no OTA package with id {package.id}")
            elif stored.has_data:
                refusal = BadRequest("Updating otaPackage data is prohibited!")
            if refusal is not None:
                conn.execute("DELETE FROM ota_chunks WHERE data_id = ?", (package.data_id,))
                return refusal  # (returned, not raised: the chunks' removal is committed)
            done = dataclasses.replace(stored, file_name=package.file_name, content_type=package.content_type,
                                       data_size=package.data_size, checksum_algorithm=package.checksum_algorithm,
                                       checksum=package.checksum, data_id=package.data_id)
            conn.execute("UPDATE ota_packages SET file_name = ?, content_type = ?, data_size = ?,"
                         " checksum_algorithm = ?, checksum = ?, data_id = ? WHERE id = ?",
                         (done.file_name, done.content_type, done.data_size, done.checksum_algorithm,
                          done.checksum, done.data_id, done.id))
            return done

        def answer(result):
            if isinstance(result, Exception):
                raise result
            return result

        return self._write(job).addCallback(answer)

    def discard_ota_upload(self, upload_id):
        if not is_id(upload_id):
            return defer.fail(BadRequest("the upload id must be a non-empty string"))

        def job(conn):
            conn.execute("DELETE FROM ota_chunks WHERE data_id = ?", (upload_id,))

        return self._write(job)

    def read_ota_data(self, package_id, offset, length):
        try:
            check_ota_range(offset, length)
        except BadRequest:
            return defer.fail()

        def read(conn):
            row = conn.execute("SELECT data_id, data_size FROM ota_packages WHERE id = ?", (package_id,)).fetchone()
            if row is None or row[0] is None:
                raise NotFound(f"no OTA package with data with id {package_id}")
            data_id, size = row
            parts = []
            for index, start, end in ota_chunks(offset, length, size):
                rowid = one(conn, "SELECT rowid FROM ota_chunks WHERE data_id = ? AND idx = ?", data_id, index)
                if rowid is None:
                    raise NotFound(f"chunk {index} of OTA package {package_id} is missing")
                with conn.blobopen("ota_chunks", "data", rowid, readonly=True) as blob:
                    blob.seek(start)
                    parts.append(blob.read(end - start))
            return b"".join(parts)

        return self._read(read)

    def delete_ota_package(self, package_id):
        if not is_id(package_id):
            return defer.succeed(False)

        def job(conn):
            data_id = conn.execute("SELECT data_id FROM ota_packages WHERE id = ?", (package_id,)).fetchone()
            if data_id is None:
                return False
            if _assigned(conn, package_id):
                raise BadRequest("The otaPackage referenced by the device profiles or devices cannot be deleted!")
            conn.execute("DELETE FROM ota_assignments WHERE package_id = ?", (package_id,))  # (of deleted ones)
            conn.execute("DELETE FROM ota_chunks WHERE data_id = ?", (data_id[0],))
            conn.execute("DELETE FROM ota_packages WHERE id = ?", (package_id,))
            return True

        return self._write(job)

    def set_ota_assignment(self, entity_id, ota_type, package_id):
        try:
            check_ota_assignment(entity_id, ota_type, package_id)
        except BadRequest:
            return defer.fail()

        def job(conn):
            if (one(conn, "SELECT 1 FROM devices WHERE id = ?", entity_id) is None
                    and one(conn, "SELECT 1 FROM device_profiles WHERE id = ?", entity_id) is None):
                raise NotFound(f"no device or device profile with id {entity_id}")
            if package_id is None:
                conn.execute("DELETE FROM ota_assignments WHERE entity_id = ? AND type = ?", (entity_id, ota_type))
                return
            found = one(conn, "SELECT type FROM ota_packages WHERE id = ?", package_id)
            if found is None:
                raise NotFound(f"no OTA package with id {package_id}")
            if found != ota_type:
                raise BadRequest(f"OTA package {package_id} is {found}, not {ota_type}")
            conn.execute("INSERT INTO ota_assignments (entity_id, type, package_id) VALUES (?, ?, ?)"
                         " ON CONFLICT (entity_id, type) DO UPDATE SET package_id = excluded.package_id",
                         (entity_id, ota_type, package_id))

        return self._write(job)

    def ota_assignments(self, entity_id):
        if not is_id(entity_id):
            return defer.succeed({})

        def read(conn):
            return dict(conn.execute("SELECT type, package_id FROM ota_assignments WHERE entity_id = ?",
                                     (entity_id,)).fetchall())

        return self._read(read)

    def ota_package_devices(self, package_id, limit, offset):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()

        def read(conn):
            ota_type = one(conn, "SELECT type FROM ota_packages WHERE id = ?", package_id)
            if ota_type is None:
                return [], 0
            params = {"p": package_id, "t": ota_type, "limit": limit, "offset": offset}
            total = conn.execute(f"SELECT count(*) {_EFFECTIVE}", params).fetchone()[0]
            rows = conn.execute(f"SELECT {_DEVICE} {_EFFECTIVE} ORDER BY d.created_time, d.id"
                                " LIMIT :limit OFFSET :offset", params).fetchall()
            return [Device(*row) for row in rows], total

        return self._read(read)


def _assigned(conn, package_id):
    """Whether a device or profile that exists has the package assigned."""
    return one(conn, "SELECT 1 FROM ota_assignments a WHERE a.package_id = ? AND (EXISTS (SELECT 1 FROM devices"
                     " WHERE id = a.entity_id) OR EXISTS (SELECT 1 FROM device_profiles WHERE id = a.entity_id))"
                     " LIMIT 1", package_id) is not None
