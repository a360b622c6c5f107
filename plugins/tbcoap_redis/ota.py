"""The Redis store's OTA calls (mixed into RedisStore; the scripts are lua/ota_*.lua).

A package is the hash ``P:ota:{id}``; its data the strings ``P:otadata:{upload id}:{index}`` of
OTA_CHUNK bytes each (``...:n`` counts them), read with GETRANGE inside one script; assignments are ``P:ota:assign:{entity}``
(type -> package) with ``P:ota:{package}:assigned`` (the entities) beside them.
"""

from twisted.internet import defer

from tbcoap.errors import BadRequest, DuplicateName, NotFound
from tbcoap.models import OTA_CHUNK, OtaPackage
from tbcoap.storekit import (check_ota_assignment, check_ota_chunk, check_ota_data, check_ota_package,
                             check_ota_range, check_page, is_id)

from .records import as_device

_REFUSALS = {
    "NOPROFILE": lambda: NotFound("no such device profile"),
    "DUP": lambda: DuplicateName("an OTA package with such title, version, type and profile already exists"),
    "NOTFOUND": lambda: NotFound("no such OTA package, or it has no data"),
    "HASDATA": lambda: BadRequest("Updating otaPackage data is prohibited!"),
    "ASSIGNED": lambda: BadRequest("The otaPackage referenced by the device profiles or devices cannot be deleted!"),
    "NOENTITY": lambda: NotFound("no such device or device profile"),
    "NOPACKAGE": lambda: NotFound("no such OTA package"),
    "WRONGTYPE": lambda: BadRequest("the OTA package is of another type"),
}


def _refused(reply):
    if isinstance(reply, str) and reply in _REFUSALS:
        raise _REFUSALS[reply]()
    return reply


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def as_package(row):
    if not row or row[0] is None:
        return None
    row = [_text(v) for v in row]
    (id_, title, version, type_, profile, tag, created, file_name, content_type, size, algorithm, checksum,
     data_id) = row
    return OtaPackage(id=id_, title=title, version=version, type=type_, device_profile_id=profile, tag=tag,
                      created_time=int(created), file_name=file_name, content_type=content_type,
                      data_size=None if size is None else int(size), checksum_algorithm=algorithm,
                      checksum=checksum, data_id=data_id)


def _bytes(value):
    """txredisapi hands back a reply that happens to be UTF-8 as text: the same bytes again."""
    return value.encode() if isinstance(value, str) else bytes(value)


class OtaCalls:
    def _ota_write(self, name, *args):
        return self._write(name, "OTA package", *args).addCallback(_refused)

    def add_ota_package(self, package):
        try:
            check_ota_package(package)
        except BadRequest:
            return defer.fail()
        d = self._ota_write("ota_add", package.id, package.title, package.version, package.type,
                            package.device_profile_id, package.tag or "", package.created_time)
        return d.addCallback(lambda _: OtaPackage(id=package.id, title=package.title, version=package.version,
                                                  type=package.type, device_profile_id=package.device_profile_id,
                                                  tag=package.tag, created_time=package.created_time))

    def get_ota_package(self, package_id):
        if not is_id(package_id):
            return defer.succeed(None)
        return self._read("ota_get", package_id).addCallback(as_package)

    def list_ota_packages(self, limit, offset, profile_id=None, ota_type=None):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()
        if limit == 0:
            limit, count_only = 1, True
        else:
            count_only = False
        d = self._read("ota_list", offset, limit, profile_id or "", ota_type or "")
        return d.addCallback(lambda reply: ([] if count_only else [as_package(row) for row in reply[1:]],
                                            int(reply[0])))

    def write_ota_chunk(self, upload_id, index, data):
        try:
            check_ota_chunk(upload_id, index, data)
        except BadRequest:
            return defer.fail()
        return self._ota_write("ota_chunk", upload_id, index, bytes(data)).addCallback(lambda _: None)

    def finish_ota_data(self, package):
        try:
            check_ota_data(package)
        except BadRequest:
            return defer.fail()
        d = self._ota_write("ota_finish", package.id, package.data_id, package.file_name, package.content_type,
                            package.data_size, package.checksum_algorithm, package.checksum)
        return d.addCallback(lambda _: self.get_ota_package(package.id))

    def discard_ota_upload(self, upload_id):
        if not is_id(upload_id):
            return defer.fail(BadRequest("the upload id must be a non-empty string"))
        return self._ota_write("ota_discard", upload_id).addCallback(lambda _: None)

    def read_ota_data(self, package_id, offset, length):
        try:
            check_ota_range(offset, length)
        except BadRequest:
            return defer.fail()
        if not is_id(package_id):
            return defer.fail(NotFound("no such OTA package"))
        d = self._read("ota_read", package_id, offset, length, OTA_CHUNK)
        return d.addCallback(_refused).addCallback(lambda reply: _bytes(reply[0]))

    def delete_ota_package(self, package_id):
        if not is_id(package_id):
            return defer.succeed(False)
        return self._ota_write("ota_delete", package_id).addCallback(lambda n: int(n) == 1)

    def set_ota_assignment(self, entity_id, ota_type, package_id):
        try:
            check_ota_assignment(entity_id, ota_type, package_id)
        except BadRequest:
            return defer.fail()
        return self._ota_write("ota_assign", entity_id, ota_type, package_id or "").addCallback(lambda _: None)

    def ota_assignments(self, entity_id):
        if not is_id(entity_id):
            return defer.succeed({})
        d = self._read("ota_assignments", entity_id)
        return d.addCallback(lambda reply: {_text(reply[i]): _text(reply[i + 1]) for i in range(0, len(reply), 2)})

    def ota_package_devices(self, package_id, limit, offset):
        try:
            check_page(limit, offset)
        except BadRequest:
            return defer.fail()
        if not is_id(package_id):
            return defer.succeed(([], 0))
        d = self._read("ota_devices", package_id, offset, limit)
        return d.addCallback(lambda reply: ([as_device(row) for row in reply[1:]], int(reply[0])))
