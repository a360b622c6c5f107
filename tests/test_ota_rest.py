"""OTA packages over REST with ThingsBoard's own client (tb-rest-client) against a live ``twistd -n
tbcoap``: upload (multipart, streamed), info, lists, download, checksums, assignment, delete."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zlib

import mmh3
import pytest

from tests.blocking import rest
from tests.conftest import ADMIN_KEY, require

try:
    from tb_rest_client.models import DeviceProfileId, SaveOtaPackageInfoRequest
    from tb_rest_client.rest import ApiException
    from tb_rest_client.rest_client import RestClient
except ImportError:  # pragma: no cover - the test extra installs it
    RestClient = None


@pytest.fixture
def client(server):
    require(RestClient is not None, "tb-rest-client is not installed", "pip install tb-rest-client")
    rc = RestClient(server.http_url)
    rc.api_key_login(ADMIN_KEY)
    return rc


def profile(server, name=None):
    status, body = rest(server.http_url, "POST", "/api/deviceProfile",
                        {"name": name or f"ota-{uuid.uuid4().hex[:8]}", "provisionType": "DISABLED"})
    assert status == 200, body
    return body


def new_package(client, profile_json, title="fw", version=None, ota_type="FIRMWARE", tag=None):
    request = SaveOtaPackageInfoRequest(title=title, version=version or uuid.uuid4().hex[:8], type=ota_type, tag=tag,
                                        device_profile_id=DeviceProfileId(profile_json["id"]["id"], "DEVICE_PROFILE"))
    return client.save_ota_package_info(request)


def refused(call, *args, **kwargs):
    with pytest.raises(ApiException) as raised:
        call(*args, **kwargs)
    return raised.value.status, json.loads(raised.value.body)


def test_upload_info_list_download_delete(client, server, tmp_path):
    p = profile(server)
    info = new_package(client, p, tag="v-tag")
    assert info.has_data is False and info.title == "fw" and info.tag == "v-tag"
    assert info.id.entity_type == "OTA_PACKAGE"
    data = os.urandom(1_500_000)  # over --max-rest-body (1 MiB): only the streamed upload takes it
    path = tmp_path / "firmware.bin"
    path.write_bytes(data)
    done = client.save_ota_package_data(info.id, checksum_algorithm="SHA256", file=str(path))
    assert done.has_data is True and done.data_size == len(data) and done.file_name == "firmware.bin"
    assert (done.checksum_algorithm, done.checksum) == ("SHA256", hashlib.sha256(data).hexdigest())
    again = client.get_ota_package_info_by_id(info.id)
    assert again.checksum == done.checksum and again.has_data
    page = client.get_ota_packages(page_size=100, page=0)
    assert info.id.id in [item.id.id for item in page.data]
    for_profile = client.get_ota_packages_v1(DeviceProfileId(p["id"]["id"], "DEVICE_PROFILE"), "FIRMWARE", 10, 0)
    assert [item.id.id for item in for_profile.data] == [info.id.id]
    assert client.download_ota_package(info.id) == data
    # data is never replaced, as ThingsBoard
    status, body = refused(client.save_ota_package_data, info.id, checksum_algorithm="SHA256", file=str(path))
    assert status == 400 and "prohibited" in body["message"]
    # assigned to the profile: cannot be deleted
    p["firmwareId"] = {"entityType": "OTA_PACKAGE", "id": info.id.id}
    status, saved = rest(server.http_url, "POST", "/api/deviceProfile", p)
    assert status == 200 and saved["firmwareId"]["id"] == info.id.id, saved
    status, body = refused(client.delete_ota_package, info.id)
    assert status == 400
    p["firmwareId"] = None
    status, saved = rest(server.http_url, "POST", "/api/deviceProfile", p)
    assert status == 200 and saved.get("firmwareId") is None
    client.delete_ota_package(info.id)
    status, _ = refused(client.get_ota_package_info_by_id, info.id)
    assert status == 404


@pytest.mark.parametrize("algorithm, digest", [
    ("MD5", lambda d: hashlib.md5(d).hexdigest()),
    ("SHA256", lambda d: hashlib.sha256(d).hexdigest()),
    ("SHA384", lambda d: hashlib.sha384(d).hexdigest()),
    ("SHA512", lambda d: hashlib.sha512(d).hexdigest()),
    ("CRC32", lambda d: zlib.crc32(d).to_bytes(4, "little").hex()),
    ("MURMUR3_32", lambda d: mmh3.hash(d, signed=False).to_bytes(4, "little").hex()),
    ("MURMUR3_128", lambda d: mmh3.hash_bytes(d).hex()),
])
def test_checksums_computed_and_checked(client, server, tmp_path, algorithm, digest):
    p = profile(server)
    data = os.urandom(70_000)
    path = tmp_path / "fw.bin"
    path.write_bytes(data)
    wrong = new_package(client, p)
    status, body = refused(client.save_ota_package_data, wrong.id, checksum_algorithm=algorithm, file=str(path),
                           checksum="00" * 4)
    assert status == 400 and "checksum" in body["message"]
    assert client.get_ota_package_info_by_id(wrong.id).has_data is False  # a refused upload leaves nothing
    computed = client.save_ota_package_data(wrong.id, checksum_algorithm=algorithm, file=str(path))
    assert computed.checksum == digest(data)
    given = new_package(client, p)
    checked = client.save_ota_package_data(given.id, checksum_algorithm=algorithm, file=str(path),
                                           checksum=digest(data).upper())
    assert checked.checksum == digest(data)


def test_refusals(client, server, tmp_path):
    p = profile(server)
    info = new_package(client, p, version="1.0")
    status, body = refused(new_package, client, p, version="1.0")
    assert status == 400, body  # (title, version, type, profile) is unique
    status, body = rest(server.http_url, "POST", "/api/otaPackage",
                        {"title": "x", "version": "1", "type": "BOOT", "deviceProfileId": {"id": p["id"]["id"]}})
    assert status == 400 and "Type" in body["message"]
    status, body = rest(server.http_url, "POST", "/api/otaPackage", {"title": "x", "version": "1", "type": "FIRMWARE"})
    assert status == 400
    path = tmp_path / "fw.bin"
    path.write_bytes(b"x")
    status, body = refused(client.save_ota_package_data, info.id, checksum_algorithm="SHA3", file=str(path))
    assert status == 400 and "checksumAlgorithm" in body["message"]
    status, body = refused(client.save_ota_package_data, str(uuid.uuid4()), checksum_algorithm="SHA256", file=str(path))
    assert status == 404
    status, body = rest(server.http_url, "POST", f"/api/otaPackage/{info.id.id}", {"not": "multipart"})
    assert status == 400
    status, body = rest(server.http_url, "GET", "/api/otaPackages?pageSize=10&page=0", key="wrong")
    assert status == 401
    # no data yet: it cannot be assigned
    p["firmwareId"] = {"entityType": "OTA_PACKAGE", "id": info.id.id}
    status, body = rest(server.http_url, "POST", "/api/deviceProfile", p)
    assert status == 400 and "empty data" in body["message"]
