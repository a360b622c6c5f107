"""The IStore contract for OTA packages: info, data in chunks read by range, assignments.

Part of ``tbcoap.testing.store_contract`` (which imports these tests), run with its ``store`` fixture.
"""

import os
from dataclasses import replace

import pytest
import pytest_twisted

from tbcoap.errors import BadRequest, DuplicateName, NotFound
from tbcoap.models import OTA_CHUNK, Device, DeviceProfile, OtaPackage, new_id, now_ms


async def _raises(exc_type, d):
    with pytest.raises(exc_type):
        await d


async def _profile(store, name="ota-profile"):
    return await store.add_profile(DeviceProfile(id=new_id(), name=name))


def _package(profile, title="fw", version="1.0", ota_type="FIRMWARE", **kw):
    return OtaPackage(id=new_id(), title=title, version=version, type=ota_type, device_profile_id=profile.id, **kw)


async def _upload(store, package, data, file_name="fw.bin"):
    """Write ``data`` in chunks under a new upload id and finish it; fires the stored package."""
    upload_id = new_id()
    for index in range(0, max(1, -(-len(data) // OTA_CHUNK))):
        await store.write_ota_chunk(upload_id, index, data[index * OTA_CHUNK:(index + 1) * OTA_CHUNK])
    done = replace(package, file_name=file_name, content_type="application/octet-stream", data_size=len(data),
                   checksum_algorithm="SHA256", checksum="ab" * 32, data_id=upload_id)
    return await store.finish_ota_data(done)


@pytest_twisted.ensureDeferred
async def test_ota_packages_added_found_and_listed(store):
    profile = await _profile(store)
    now = now_ms()  # explicit times: two packages made in one millisecond list in id order
    first = await store.add_ota_package(_package(profile, tag="t1", created_time=now))
    assert first.data_id is None and not first.has_data and first.tag == "t1"
    assert await store.get_ota_package(first.id) == first
    assert await store.get_ota_package(new_id()) is None
    second = await store.add_ota_package(_package(profile, version="2.0", ota_type="SOFTWARE", created_time=now + 1))
    await _raises(DuplicateName, store.add_ota_package(_package(profile)))
    await _raises(NotFound, store.add_ota_package(replace(_package(profile, version="3"), device_profile_id=new_id())))
    await _raises(BadRequest, store.add_ota_package(_package(profile, ota_type="BOOT")))
    assert await store.list_ota_packages(10, 0) == ([first, second], 2)
    assert await store.list_ota_packages(1, 1) == ([second], 2)
    assert await store.list_ota_packages(10, 0, profile.id, "FIRMWARE") == ([], 0)  # no data yet
    with_data = await _upload(store, first, b"x" * 10)
    assert await store.list_ota_packages(10, 0, profile.id, "FIRMWARE") == ([with_data], 1)
    assert await store.list_ota_packages(10, 0, profile.id, "SOFTWARE") == ([], 0)


@pytest_twisted.ensureDeferred
async def test_ota_data_in_chunks_read_by_range(store):
    profile = await _profile(store)
    package = await store.add_ota_package(_package(profile))
    data = os.urandom(2 * OTA_CHUNK + 1234)
    stored = await _upload(store, package, data)
    assert stored.has_data and stored.data_size == len(data) and stored.file_name == "fw.bin"
    assert stored.checksum == "ab" * 32 and stored.checksum_algorithm == "SHA256"
    assert await store.get_ota_package(package.id) == stored
    for offset, length in [(0, 16), (0, 1024), (OTA_CHUNK - 10, 1024), (OTA_CHUNK - 1, 2 * OTA_CHUNK),
                           (len(data) - 5, 1024), (123, 0), (len(data), 16), (len(data) + 99, 16), (0, len(data))]:
        assert await store.read_ota_data(package.id, offset, length) == data[offset:offset + length], (offset, length)
    await _raises(NotFound, store.read_ota_data(new_id(), 0, 16))
    await _raises(BadRequest, store.read_ota_data(package.id, -1, 16))
    empty = await store.add_ota_package(_package(profile, version="empty"))
    await _raises(NotFound, store.read_ota_data(empty.id, 0, 16))  # no data yet
    zero = await _upload(store, empty, b"")
    assert zero.data_size == 0 and await store.read_ota_data(empty.id, 0, 16) == b""


@pytest_twisted.ensureDeferred
async def test_ota_data_is_never_replaced(store):
    profile = await _profile(store)
    package = await store.add_ota_package(_package(profile))
    await _upload(store, package, b"first")
    await _raises(BadRequest, _upload(store, package, b"second"))
    assert await store.read_ota_data(package.id, 0, 100) == b"first"
    await _raises(NotFound, _upload(store, replace(package, id=new_id()), b"x"))
    await _raises(BadRequest, store.write_ota_chunk(new_id(), 0, b"x" * (OTA_CHUNK + 1)))


@pytest_twisted.ensureDeferred
async def test_ota_discarded_upload_is_not_data(store):
    profile = await _profile(store)
    package = await store.add_ota_package(_package(profile))
    upload_id = new_id()
    await store.write_ota_chunk(upload_id, 0, b"abandoned")
    await store.discard_ota_upload(upload_id)
    await _raises(NotFound, store.read_ota_data(package.id, 0, 16))
    stored = await _upload(store, package, b"kept")
    assert await store.read_ota_data(stored.id, 0, 16) == b"kept"


@pytest_twisted.ensureDeferred
async def test_ota_assignments_and_deletion(store):
    profile = await _profile(store)
    firmware = await store.add_ota_package(_package(profile))
    software = await store.add_ota_package(_package(profile, ota_type="SOFTWARE"))
    device = Device(id=new_id(), name="ota-dev", type=profile.name)
    await store.add_device(device, "ota-token")
    assert await store.ota_assignments(profile.id) == {}
    await store.set_ota_assignment(profile.id, "FIRMWARE", firmware.id)
    await store.set_ota_assignment(device.id, "SOFTWARE", software.id)
    assert await store.ota_assignments(profile.id) == {"FIRMWARE": firmware.id}
    assert await store.ota_assignments(device.id) == {"SOFTWARE": software.id}
    await _raises(BadRequest, store.set_ota_assignment(device.id, "FIRMWARE", software.id))  # wrong type
    await _raises(NotFound, store.set_ota_assignment(new_id(), "FIRMWARE", firmware.id))
    await _raises(NotFound, store.set_ota_assignment(device.id, "FIRMWARE", new_id()))
    await _raises(BadRequest, store.delete_ota_package(firmware.id))  # assigned to the profile
    assert await store.get_ota_package(firmware.id) == firmware
    await store.set_ota_assignment(profile.id, "FIRMWARE", None)
    assert await store.ota_assignments(profile.id) == {}
    assert await store.delete_ota_package(firmware.id) is True
    assert await store.delete_ota_package(firmware.id) is False
    assert await store.get_ota_package(firmware.id) is None
    await store.delete_device(device.id)  # a deleted device holds no package
    assert await store.delete_ota_package(software.id) is True


@pytest_twisted.ensureDeferred
async def test_ota_deleted_package_takes_its_data(store):
    profile = await _profile(store)
    package = await store.add_ota_package(_package(profile))
    await _upload(store, package, b"z" * (OTA_CHUNK + 1))
    assert await store.delete_ota_package(package.id) is True
    await _raises(NotFound, store.read_ota_data(package.id, 0, 16))
    again = await store.add_ota_package(_package(profile))  # the same title and version again
    assert (await _upload(store, again, b"new")).data_size == 3


@pytest_twisted.ensureDeferred
async def test_ota_package_devices_own_over_profile(store):
    profile = await _profile(store)
    other_profile = await _profile(store, "ota-other")
    old = await store.add_ota_package(_package(profile))
    new = await store.add_ota_package(_package(profile, version="2.0"))
    devices = []
    for i in range(4):
        device = Device(id=new_id(), name=f"ota-{i}", type=profile.name, created_time=1000 + i)
        await store.add_device(device, f"ota-token-{i}")
        devices.append(device)
    await store.add_device(Device(id=new_id(), name="ota-x", type=other_profile.name), "ota-token-x")
    await store.set_ota_assignment(profile.id, "FIRMWARE", old.id)
    await store.set_ota_assignment(devices[1].id, "FIRMWARE", new.id)
    await store.set_ota_assignment(devices[2].id, "SOFTWARE",
                                   (await store.add_ota_package(_package(profile, ota_type="SOFTWARE"))).id)
    got, total = await store.ota_package_devices(old.id, 10, 0)
    assert total == 3 and [d.id for d in got] == [devices[0].id, devices[2].id, devices[3].id]
    assert await store.ota_package_devices(old.id, 1, 1) == ([devices[2]], 3)
    assert await store.ota_package_devices(new.id, 10, 0) == ([devices[1]], 1)
    assert await store.ota_package_devices(new_id(), 10, 0) == ([], 0)
