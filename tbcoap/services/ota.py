"""Firmware and software packages (OTA), as ThingsBoard has them: packages uploaded in chunks with
their checksum, assigned to profiles and devices (a device's own over its profile's), announced to
devices as ``fw_*`` / ``sw_*`` shared attributes, downloaded by range, progress read from telemetry.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict

import mmh3
from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.events import DeviceUpdated, ProfileChanged, SharedAttributesChanged, SharedAttributesDeleted
from tbcoap.models import OTA_CHUNK, OTA_TYPES, OtaPackage, new_id, now_ms

MAX_OTA_SIZE = 256 * 1024 * 1024  # bytes of one package (--max-ota-size)
ATTRIBUTE_SUFFIXES = ("title", "version", "size", "checksum", "checksum_algorithm", "tag")
PREFIX = {"FIRMWARE": "fw", "SOFTWARE": "sw"}
STATES = ("DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING", "UPDATED", "FAILED")
CACHE_SECONDS = 2.0  # how long a device's package choice is reused by its block requests
MAX_CACHED_DEVICES = 10_000
MAX_CACHED_PACKAGES = 1_000
METRICS_EVERY = 60.0  # seconds between passes counting devices by state (for /metrics)
METRICS_MAX_DEVICES = 10_000  # devices one pass reads the state of
PAGE = 500  # devices per page when a profile's assignment changes


class _Crc32:
    """Guava's crc32 as ThingsBoard prints it: the CRC's four bytes, least significant first."""

    def __init__(self):
        self.value = 0

    def update(self, data):
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self):
        return self.value.to_bytes(4, "little").hex()


class _Murmur:
    def __init__(self, hasher):
        self.hasher = hasher

    def update(self, data):
        self.hasher.update(bytes(data))

    def hexdigest(self):
        return self.hasher.digest().hex()  # little-endian words, as Guava's HashCode prints them


CHECKSUMS = {
    "MD5": lambda: hashlib.md5(usedforsecurity=False),
    "SHA256": hashlib.sha256,
    "SHA384": hashlib.sha384,
    "SHA512": hashlib.sha512,
    "CRC32": _Crc32,
    "MURMUR3_32": lambda: _Murmur(mmh3.mmh3_32()),
    "MURMUR3_128": lambda: _Murmur(mmh3.mmh3_x64_128()),
}


def checksum_of(algorithm, data: bytes) -> str:
    hasher = CHECKSUMS[algorithm]()
    hasher.update(data)
    return hasher.hexdigest()


def etag_of(package) -> bytes:
    """The ETag of a package's blocks: 8 bytes that change when another package is served."""
    return hashlib.sha256(f"{package.id}:{package.checksum}".encode()).digest()[:8]


class Upload:
    """One package's data on its way to the store: fed in pieces, written in OTA_CHUNK chunks as they
    fill (``feed`` fires once the chunks it completed are stored: the caller reads on after that),
    the checksum computed on the way, checked at ``finish``."""

    def __init__(self, service, package, algorithm, checksum):
        self.service, self.package = service, package
        self.algorithm, self.expected = algorithm, checksum
        self.hasher = CHECKSUMS[algorithm]()
        self.upload_id = new_id()
        self.buffer = bytearray()
        self.size = 0
        self.index = 0
        self.wrote = False

    def feed(self, data):
        """Add bytes; None, or a Deferred fired once the chunks they filled are stored.  BadRequest past the
        size limit."""
        self.size += len(data)
        if self.size > self.service.max_size:
            raise BadRequest(f"the package is over {self.service.max_size} bytes (--max-ota-size)")
        self.hasher.update(data)
        self.buffer += data
        writes = []
        while len(self.buffer) >= OTA_CHUNK:
            chunk = bytes(self.buffer[:OTA_CHUNK])
            del self.buffer[:OTA_CHUNK]
            writes.append(self._write(chunk))
        if not writes:
            return None
        return defer.gatherResults(writes, consumeErrors=True).addErrback(lambda f: f.value.subFailure)

    def _write(self, chunk):
        self.wrote = True
        d = self.service.store.write_ota_chunk(self.upload_id, self.index, chunk)
        self.index += 1
        return d

    @defer.inlineCallbacks
    def finish(self, file_name, content_type):
        """Store the rest, check the checksum, give the package its data; fires the package."""
        if self.buffer or self.index == 0:
            yield self._write(bytes(self.buffer))
            self.buffer = bytearray()
        checksum = self.hasher.hexdigest()
        if self.expected and self.expected.lower() != checksum:
            yield self.abort()
            raise BadRequest(f"the {self.algorithm} checksum of the data is {checksum}, not {self.expected}")
        done = OtaPackage(id=self.package.id, title=self.package.title, version=self.package.version,
                          type=self.package.type, device_profile_id=self.package.device_profile_id,
                          tag=self.package.tag, created_time=self.package.created_time, file_name=file_name,
                          content_type=content_type, data_size=self.size, checksum_algorithm=self.algorithm,
                          checksum=checksum, data_id=self.upload_id)
        stored = yield self.service.store.finish_ota_data(done)
        return stored

    def abort(self):
        """Remove what was stored of this upload."""
        self.buffer = bytearray()
        if not self.wrote:
            return defer.succeed(None)
        return self.service.store.discard_ota_upload(self.upload_id)


class OtaService:
    """Packages, assignments and the fw_*/sw_* attributes they set, and the downloads' look-ups."""

    def __init__(self, store, attributes, bus, clock=None, max_size=MAX_OTA_SIZE):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store, self.attributes, self.bus, self.clock = store, attributes, bus, clock
        self.max_size = max_size
        self._chosen = OrderedDict()  # device id -> (expires, {type: package or None})
        self._packages = OrderedDict()  # package id -> OtaPackage with data (never changes)
        self._states = {}  # (type, state) -> devices, from the last counting pass
        self._counted_at = None
        self._counting = False
        bus.subscribe(self._on_event)

    # -- packages ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def save_info(self, body):
        """A new package from ThingsBoard's OtaPackageInfo JSON (or, with an id, its tag changed)."""
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        title, version, ota_type = body.get("title"), body.get("version"), body.get("type")
        profile_id = (body.get("deviceProfileId") or {}).get("id") if isinstance(body.get("deviceProfileId"),
                                                                                 dict) else None
        for name, value in (("title", title), ("version", version), ("deviceProfileId", profile_id)):
            if not isinstance(value, str) or not value.strip():
                raise BadRequest(f"OtaPackage {name} should be specified!")
        if ota_type not in OTA_TYPES:
            raise BadRequest(f"Type should be one of {', '.join(OTA_TYPES)}")
        tag = body.get("tag")
        if tag is not None and not isinstance(tag, str):
            raise BadRequest("tag must be a string")
        if body.get("url"):
            raise BadRequest("packages by URL are not supported: upload the data")
        existing = body.get("id")
        if isinstance(existing, dict) and existing.get("id"):
            stored = yield self.store.get_ota_package(existing["id"])
            if stored is None:
                raise NotFound(f"no OTA package with id {existing['id']}")
            if (stored.title, stored.version, stored.type, stored.device_profile_id) != (title, version, ota_type,
                                                                                        profile_id):
                raise BadRequest("Updating otaPackage title, version, type or device profile is prohibited!")
            return stored
        if (yield self.store.get_profile(profile_id)) is None:
            raise BadRequest(f"no device profile with id {profile_id}")
        package = OtaPackage(id=new_id(), title=title, version=version, type=ota_type, device_profile_id=profile_id,
                             tag=tag if tag else f"{title} {version}", created_time=now_ms())
        stored = yield self.store.add_ota_package(package)
        return stored

    @defer.inlineCallbacks
    def begin_upload(self, package_id, algorithm, checksum):
        """An Upload for the package's data (BadRequest for an unknown algorithm or a package with data)."""
        algorithm = (algorithm or "SHA256").upper()
        if algorithm not in CHECKSUMS:
            raise BadRequest(f"checksumAlgorithm must be one of {', '.join(CHECKSUMS)}")
        package = yield self.get(package_id)
        if package.has_data:
            raise BadRequest("Updating otaPackage data is prohibited!")
        return Upload(self, package, algorithm, checksum)

    @defer.inlineCallbacks
    def get(self, package_id):
        package = yield self.store.get_ota_package(package_id)
        if package is None:
            raise NotFound(f"OtaPackage with id [{package_id}] is not found")
        return package

    def page(self, page_size, page, profile_id=None, ota_type=None):
        return self.store.list_ota_packages(page_size, page_size * page, profile_id, ota_type)

    def read(self, package, offset, length):
        """Deferred bytes of a package's data."""
        return self.store.read_ota_data(package.id, offset, length)

    @defer.inlineCallbacks
    def delete(self, package_id):
        if not (yield self.store.delete_ota_package(package_id)):
            raise NotFound(f"OtaPackage with id [{package_id}] is not found")
        self._packages.pop(package_id, None)

    # -- assignment ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def _assignable(self, package_id, ota_type, profile):
        if package_id is None:
            return None
        package = yield self.get(package_id)
        if package.type != ota_type:
            raise BadRequest(f"Can't assign {package.type.lower()} as {ota_type.lower()}!")
        if not package.has_data:
            raise BadRequest(f"Can't assign {ota_type.lower()} with empty data!")
        if profile is not None and package.device_profile_id != profile.id:
            raise BadRequest(f"Can't assign {ota_type.lower()} with different deviceProfile!")
        return package

    @defer.inlineCallbacks
    def assign_profile(self, profile, ota_type, package_id):
        """Give the profile this package (None: none) and its devices without their own the attributes."""
        yield self._assignable(package_id, ota_type, profile)
        before = (yield self.store.ota_assignments(profile.id)).get(ota_type)
        if before == package_id:
            return
        old_devices = (yield self._device_ids(before)) if before else set()
        yield self.store.set_ota_assignment(profile.id, ota_type, package_id)
        self._forget()
        if package_id is not None:
            now_on = yield self._device_ids(package_id)
            yield self._announce_many(now_on, ota_type)
        else:
            still = yield self._device_ids(before)
            yield self._announce_many(old_devices - still, ota_type)

    @defer.inlineCallbacks
    def assign_device(self, device, ota_type, package_id):
        """Give the device its own package (None: its profile's again) and the matching attributes."""
        profile = yield self.store.profile_by_name(device.type)
        yield self._assignable(package_id, ota_type, profile)
        before = (yield self.store.ota_assignments(device.id)).get(ota_type)
        if before == package_id:
            return
        yield self.store.set_ota_assignment(device.id, ota_type, package_id)
        self._chosen.pop(device.id, None)
        yield self.announce(device.id, ota_type)

    @defer.inlineCallbacks
    def assignments(self, entity_id):
        """``{"firmwareId": id or None, "softwareId": id or None}`` of a device or profile."""
        found = yield self.store.ota_assignments(entity_id)
        return {"firmwareId": found.get("FIRMWARE"), "softwareId": found.get("SOFTWARE")}

    @defer.inlineCallbacks
    def refresh_device(self, device):
        """Set a device's attributes for the packages it has now (after it was created or moved to another
        profile)."""
        self._chosen.pop(device.id, None)
        for ota_type in OTA_TYPES:
            yield self.announce(device.id, ota_type)

    @defer.inlineCallbacks
    def _device_ids(self, package_id):
        ids, offset = set(), 0
        while True:
            devices, total = yield self.store.ota_package_devices(package_id, PAGE, offset)
            ids.update(device.id for device in devices)
            offset += PAGE
            if offset >= total or not devices:
                return ids

    @defer.inlineCallbacks
    def _announce_many(self, device_ids, ota_type):
        device_ids = list(device_ids)
        for start in range(0, len(device_ids), 100):  # a hundred at a time: the store's queue stays short
            yield defer.gatherResults([self.announce(device_id, ota_type) for device_id in device_ids[start:start + 100]],
                                      consumeErrors=True)

    @defer.inlineCallbacks
    def announce(self, device_id, ota_type):
        """Set (or delete) the device's fw_*/sw_* shared attributes to match its package of ``ota_type``; its
        observations hear of it through the bus, on every node."""
        device = yield self.store.get_device(device_id)
        if device is None:
            return
        package = yield self._effective(device, ota_type)
        prefix = PREFIX[ota_type]
        keys = [f"{prefix}_{suffix}" for suffix in ATTRIBUTE_SUFFIXES]
        current = {key: value for key, (value, _ts) in
                   (yield self.store.get_attributes(device_id, "SHARED_SCOPE", keys)).items()}
        values = {}
        if package is not None:
            values = {f"{prefix}_title": package.title, f"{prefix}_version": package.version,
                      f"{prefix}_size": package.data_size, f"{prefix}_checksum": package.checksum,
                      f"{prefix}_checksum_algorithm": package.checksum_algorithm}
            if package.tag:
                values[f"{prefix}_tag"] = package.tag
        gone = [key for key in keys if key in current and key not in values]
        if gone:
            yield self.attributes.delete(device_id, "SHARED_SCOPE", gone)
        if values and values != current:
            # typed as ThingsBoard writes them (strings stay strings: no number guessing of device payloads)
            ts = now_ms()
            yield self.store.save_attributes(device_id, "SHARED_SCOPE", values, ts)
            self.bus.publish(SharedAttributesChanged(device_id, values, ts))

    # -- what a device downloads ---------------------------------------------------------

    @defer.inlineCallbacks
    def _effective(self, device, ota_type):
        own = yield self.store.ota_assignments(device.id)
        package_id = own.get(ota_type)
        if package_id is None:
            profile = yield self.store.profile_by_name(device.type)
            if profile is not None:
                package_id = (yield self.store.ota_assignments(profile.id)).get(ota_type)
        if package_id is None:
            return None
        return (yield self._package(package_id))

    @defer.inlineCallbacks
    def _package(self, package_id):
        package = self._packages.get(package_id)
        if package is None:
            package = yield self.store.get_ota_package(package_id)
            if package is None or not package.has_data:
                return None
            self._packages[package_id] = package
            if len(self._packages) > MAX_CACHED_PACKAGES:
                self._packages.popitem(last=False)
        return package

    def package_for(self, device, ota_type):
        """The package the device downloads (None: none): the package, or a Deferred of it.  Kept for
        CACHE_SECONDS, so a download's blocks ask the store for data only."""
        now = self.clock.seconds()
        chosen = self._chosen.get(device.id)
        if chosen is not None and chosen[0] > now and ota_type in chosen[1]:
            return chosen[1][ota_type]
        d = self._effective(device, ota_type)

        def keep(package):
            entry = self._chosen.get(device.id)
            types = dict(entry[1]) if entry is not None and entry[0] > now else {}
            types[ota_type] = package
            self._chosen[device.id] = (now + CACHE_SECONDS, types)
            self._chosen.move_to_end(device.id)
            while len(self._chosen) > MAX_CACHED_DEVICES:
                self._chosen.popitem(last=False)
            return package

        return d.addCallback(keep)

    def _forget(self):
        self._chosen.clear()

    def _on_event(self, event):
        """Another node's assignment shows as attribute changes of the device, or a profile change."""
        if isinstance(event, (SharedAttributesChanged, SharedAttributesDeleted)):
            keys = event.values if isinstance(event, SharedAttributesChanged) else event.keys
            if any(key[:3] in ("fw_", "sw_") for key in keys):
                self._chosen.pop(event.device_id, None)
        elif isinstance(event, DeviceUpdated):
            self._chosen.pop(event.device_id, None)
        elif isinstance(event, ProfileChanged):
            self._forget()

    # -- progress ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def package_devices(self, package_id, page_size, page):
        """``(rows, total)``: ``(device, state, error)`` of the devices of a package (their fw_state or sw_state
        telemetry)."""
        package = yield self.get(package_id)
        devices, total = yield self.store.ota_package_devices(package_id, page_size, page_size * page)
        prefix = PREFIX[package.type]
        keys = [f"{prefix}_state", f"{prefix}_error", f"{prefix}_title", f"{prefix}_version"]
        rows = []
        for device in devices:
            latest = yield self.store.latest_telemetry(device.id, keys)
            rows.append((device, {key: value for key, (_ts, value) in latest.items()}))
        return rows, total

    def state_counts(self):
        """``{(type, state): devices}`` of the devices that get a package, by the state they reported
        (``NONE``: nothing yet), from the last pass; a scrape starts a new pass when the last one is over
        METRICS_EVERY old.  A pass reads at most METRICS_MAX_DEVICES devices, a page at a time."""
        now = self.clock.seconds()
        if not self._counting and (self._counted_at is None or now - self._counted_at >= METRICS_EVERY):
            self._counting = True
            d = self._count_states()
            d.addErrback(lambda _: None)  # (a store that is down: the last counts stay)
            d.addBoth(self._counted)
        return dict(self._states)

    def _counted(self, _):
        self._counting = False
        self._counted_at = self.clock.seconds()

    @defer.inlineCallbacks
    def _count_states(self):
        counts, seen, offset = {}, 0, 0
        while seen < METRICS_MAX_DEVICES:
            packages, total = yield self.store.list_ota_packages(100, offset)
            for package in packages:
                prefix = PREFIX[package.type]
                start = 0
                while seen < METRICS_MAX_DEVICES:
                    devices, count = yield self.store.ota_package_devices(package.id, PAGE, start)
                    for device in devices:
                        latest = yield self.store.latest_telemetry(device.id, [f"{prefix}_state"])
                        state = latest.get(f"{prefix}_state", (0, "NONE"))[1]
                        key = (package.type, state if state in STATES else "NONE")
                        counts[key] = counts.get(key, 0) + 1
                        seen += 1
                    start += PAGE
                    if start >= count or not devices:
                        break
            offset += 100
            if offset >= total or not packages:
                break
        self._states = counts
