"""REST calls for firmware and software packages (ThingsBoard's /api/otaPackage...), and the
``firmwareId`` / ``softwareId`` of devices and profiles, saved and shown with their usual calls."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.models import OTA_CHUNK, OTA_TYPES
from tbcoap.rest import devices, profiles
from tbcoap.rest.answers import Stream
from tbcoap.rest.upload import UploadSink
from tbcoap.rest.views import device_json, page_json

FIELDS = {"FIRMWARE": "firmwareId", "SOFTWARE": "softwareId"}


def package_json(package) -> dict:
    """ThingsBoard's OtaPackageInfo."""
    return {"id": {"entityType": "OTA_PACKAGE", "id": package.id}, "createdTime": package.created_time,
            "additionalInfo": None, "tenantId": None,
            "deviceProfileId": {"entityType": "DEVICE_PROFILE", "id": package.device_profile_id},
            "type": package.type, "title": package.title, "version": package.version, "tag": package.tag,
            "url": None, "hasData": package.has_data, "fileName": package.file_name,
            "contentType": package.content_type, "checksumAlgorithm": package.checksum_algorithm,
            "checksum": package.checksum, "dataSize": package.data_size, "name": package.title}


def _ref(package_id):
    return {"entityType": "OTA_PACKAGE", "id": package_id} if package_id else None


@defer.inlineCallbacks
def save_info(call):
    """POST /api/otaPackage {"title","version","type","deviceProfileId":{"id"},"tag"?}."""
    package = yield call.core.ota.save_info(call.json_object())
    return package_json(package)


@defer.inlineCallbacks
def save_data(call, package_id):
    """POST /api/otaPackage/{id}?checksumAlgorithm=..&checksum=.. with a multipart ``file``: streamed to the
    store when made with the admin key (tbcoap.rest.upload); a small body read from memory otherwise."""
    sink = call.request.ota_sink
    if sink is None or sink.package_id != package_id:
        ctype = call.request.getHeader(b"content-type") or b""
        if not ctype.lower().startswith(b"multipart/form-data"):
            raise BadRequest("send the package as multipart/form-data with a part named file")
        sink = UploadSink(call.core.ota, call.request, package_id, streaming=False)
        sink.received(call.body())
    package = yield sink.result()
    return package_json(package)


@defer.inlineCallbacks
def get_info(call, package_id):
    """GET /api/otaPackage/info/{id} (and /api/otaPackage/{id}: the info, the data is downloaded apart)."""
    package = yield call.core.ota.get(package_id)
    return package_json(package)


@defer.inlineCallbacks
def list_packages(call, profile_id=None, ota_type=None):
    """GET /api/otaPackages?pageSize&page, and /api/otaPackages/{deviceProfileId}/{type} (those with data)."""
    if ota_type is not None and ota_type not in OTA_TYPES:
        raise BadRequest(f"type must be one of {', '.join(OTA_TYPES)}")
    page_size, page = call.paging()
    found, total = yield call.core.ota.page(page_size, page, profile_id, ota_type)
    return page_json([package_json(p) for p in found], total, page_size, page)


@defer.inlineCallbacks
def download(call, package_id):
    """GET /api/otaPackage/{id}/download: the data, read from the store a chunk at a time as the client
    takes it (the write timeout ends a client that stops reading)."""
    ota = call.core.ota
    package = yield ota.get(package_id)
    if not package.has_data:
        raise BadRequest("the package has no data")
    request = call.request
    request.setHeader(b"content-length", str(package.data_size).encode())
    name = (package.file_name or "package").replace('"', "")
    request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode("utf-8", "replace"))
    request.setHeader(b"x-filename", name.encode("utf-8", "replace"))
    position = [0]

    def next_piece():
        if position[0] >= package.data_size:
            return None
        offset = position[0]
        position[0] += OTA_CHUNK
        return ota.read(package, offset, OTA_CHUNK)

    return Stream((package.content_type or "application/octet-stream").encode("latin-1", "replace"), next_piece,
                  lambda: None)


@defer.inlineCallbacks
def delete(call, package_id):
    """DELETE /api/otaPackage/{id} (400 while a profile or device has it)."""
    yield call.core.ota.delete(package_id)


@defer.inlineCallbacks
def package_devices(call, package_id):
    """GET /api/otaPackage/{id}/devices?pageSize&page: the devices that get the package, with their state."""
    page_size, page = call.paging()
    rows, total = yield call.core.ota.package_devices(package_id, page_size, page)
    items = []
    for device, latest in rows:
        prefix = "fw" if "fw_state" in latest or "fw_error" in latest else "sw"
        item = device_json(device)
        item["otaState"] = latest.get("fw_state", latest.get("sw_state"))
        item["otaError"] = latest.get("fw_error", latest.get("sw_error"))
        item["otaReported"] = {key: value for key, value in latest.items() if key.startswith(prefix)}
        items.append(item)
    return page_json(items, total, page_size, page)


# -- firmwareId / softwareId on the device and profile calls ------------------------------------------------


def _assignments_in(body):
    """``{type: package id or None}`` of the ``firmwareId`` / ``softwareId`` the body names (a key left
    out changes nothing; null unassigns)."""
    found = {}
    for ota_type, field in FIELDS.items():
        if field in body:
            ref = body[field]
            if ref is None:
                found[ota_type] = None
            elif isinstance(ref, dict) and isinstance(ref.get("id"), str):
                found[ota_type] = ref["id"]
            else:
                raise BadRequest(f'{field} must be {{"id": "<package id>"}} or null')
    return found


def _rewind(call):
    body = call.json_object()
    call.request.content.seek(0)
    return body


@defer.inlineCallbacks
def _with_assignments(call, answer, entity_id):
    """The answer with ``firmwareId`` / ``softwareId`` where the device or profile has a package of its own
    (left out when none, so a device's JSON is the same in every call that shows it)."""
    found = yield call.core.ota.assignments(entity_id)
    answer.update({FIELDS[t]: _ref(found[FIELDS[t]]) for t in OTA_TYPES if found[FIELDS[t]]})
    return answer


@defer.inlineCallbacks
def save_device(call):
    """POST /api/device, with ``firmwareId`` / ``softwareId`` (the device's own packages) as ThingsBoard."""
    body = _rewind(call)
    wanted = _assignments_in(body)
    answer = yield devices.create_device(call)
    device = yield call.core.devices.get(answer["id"]["id"])
    for ota_type, package_id in wanted.items():
        yield call.core.ota.assign_device(device, ota_type, package_id)
    yield call.core.ota.refresh_device(device)  # a new device, or one of another profile now
    return (yield _with_assignments(call, answer, device.id))


@defer.inlineCallbacks
def get_device(call, device_id):
    answer = yield devices.get_device(call, device_id)
    return (yield _with_assignments(call, answer, device_id))


@defer.inlineCallbacks
def save_profile(call):
    """POST /api/deviceProfile, with ``firmwareId`` / ``softwareId`` (the profile's packages)."""
    body = _rewind(call)
    wanted = _assignments_in(body)
    answer = yield profiles.create_profile(call)
    profile = yield call.core.profiles.get(answer["id"]["id"])
    for ota_type, package_id in wanted.items():
        yield call.core.ota.assign_profile(profile, ota_type, package_id)
    return (yield _with_assignments(call, answer, profile.id))


@defer.inlineCallbacks
def get_profile(call, profile_id):
    answer = yield profiles.get_profile(call, profile_id)
    return (yield _with_assignments(call, answer, profile_id))
