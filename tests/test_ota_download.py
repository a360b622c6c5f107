"""Package downloads over CoAP with real clients: the fw_* attributes reaching an observing device,
libcoap downloading byte-exact, Block2 at every size in any order (resume), size&chunk, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest_twisted
import treq
from twisted.internet import utils
from txthings import coap as tx

from tests.coapclient import GET, code_text, deferLater, open_client
from tests.conftest import ADMIN_KEY, require_tool

ATTRIBUTES = "/api/v1/OTA-TOKEN/attributes"


def multipart_body(data, name="fw.bin", boundary="otaboundary1234"):
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def upload(rest, path, data, query=""):
    body, ctype = multipart_body(data)
    response = await treq.post(rest.base + path + query, data=body,
                               headers={"X-Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": ctype})
    return response.code, json.loads(await response.content())


async def package(rest, profile_id, data, title="fw", version="1.0", ota_type="FIRMWARE"):
    status, info = await rest.post("/api/otaPackage", {"title": title, "version": version, "type": ota_type,
                                                       "deviceProfileId": {"id": profile_id}})
    assert status == 200, info
    status, info = await upload(rest, f"/api/otaPackage/{info['id']['id']}", data)
    assert status == 200, info
    return info


async def setup(rest, name="ota-profile", token="OTA-TOKEN"):
    status, profile = await rest.post("/api/deviceProfile", {"name": name, "provisionType": "DISABLED"})
    assert status == 200, profile
    status, device = await rest.post(f"/api/device?accessToken={token}", {"name": f"dev-{token}", "type": name})
    assert status == 200, device
    return profile, device


async def assign_profile(rest, profile, package_id, field="firmwareId"):
    profile = dict(profile)
    profile[field] = {"entityType": "OTA_PACKAGE", "id": package_id} if package_id else None
    status, saved = await rest.post("/api/deviceProfile", profile)
    assert status == 200, saved
    return saved


async def next_notification(client, timeout=5.0):
    while True:
        message = await client.receive(timeout)
        if message.code != tx.EMPTY and message.opt.observe is not None:
            if message.mtype == tx.CON:
                client.send_raw(tx.Message(mtype=tx.ACK, mid=message.mid, code=tx.EMPTY).encode())
            return json.loads(message.payload)


def block_value(message):
    option = message.opt.getOption(tx.BLOCK2)
    return option[0].value if option else None


def etag(message):
    option = message.opt.getOption(tx.ETAG)
    return option[0].value if option else None


@pytest_twisted.ensureDeferred
async def test_assigned_package_reaches_the_observer_and_libcoap_downloads_it(node, coap, rest, tmp_path):
    client_tool = require_tool("coap-client-notls", "install Debian's libcoap3-bin (apt-get install libcoap3-bin)")
    profile, _device = await setup(rest)
    first = await coap.request(GET, ATTRIBUTES, observe=0, token=b"obs")
    assert code_text(first.code) == "2.05"
    data = os.urandom(200_000 + 123)
    info = await package(rest, profile["id"]["id"], data, version="2.1")
    await assign_profile(rest, profile, info["id"]["id"])
    change = await next_notification(coap)
    assert change == {"fw_title": "fw", "fw_version": "2.1", "fw_size": len(data), "fw_tag": "fw 2.1",
                      "fw_checksum": hashlib.sha256(data).hexdigest(), "fw_checksum_algorithm": "SHA256"}
    out = tmp_path / "fw.bin"
    port = node.coap_address[1]
    result = await utils.getProcessOutputAndValue(client_tool, [
        "-b", "1024", "-m", "get", f"coap://127.0.0.1:{port}/fw/OTA-TOKEN?title=fw&version=2.1", "-o", str(out)])
    assert result[2] == 0, result
    assert hashlib.sha256(out.read_bytes()).hexdigest() == change["fw_checksum"]
    # unassigned: the attributes go, observers hear of it, the download is 4.04
    await assign_profile(rest, profile, None)
    gone = await next_notification(coap)
    assert sorted(gone["deleted"]) == sorted(change)
    answer = await coap.request(GET, "/fw/OTA-TOKEN")
    assert code_text(answer.code) == "4.04"


@pytest_twisted.ensureDeferred
async def test_any_block_in_any_order_at_every_size(node, coap, rest):
    profile, _device = await setup(rest)
    data = os.urandom(5000)
    info = await package(rest, profile["id"]["id"], data)
    await assign_profile(rest, profile, info["id"]["id"])
    tags = set()
    for szx in range(7):
        size = 16 << szx
        count = -(-len(data) // size)
        numbers = list(range(count))
        random.shuffle(numbers)
        got = {}
        for number in numbers[: min(count, 40)] if size < 256 else numbers:
            answer = await coap.request(GET, "/fw/OTA-TOKEN", block2=(number, False, szx))
            assert code_text(answer.code) == "2.05"
            num, more, answer_szx = block_value(answer)
            assert (num, answer_szx, more) == (number, szx, number < count - 1)
            assert answer.opt.getOption(tx.SIZE2)[0].value == len(data)
            tags.add(etag(answer))
            got[number] = answer.payload
        for number, payload in got.items():
            assert payload == data[number * size:(number + 1) * size], (szx, number)
    assert len(tags) == 1 and len(next(iter(tags))) == 8
    past = await coap.request(GET, "/fw/OTA-TOKEN", block2=(5, False, 6))
    assert code_text(past.code) == "4.02"
    first = await coap.request(GET, "/fw/OTA-TOKEN")  # no Block2: block 0 of 1024 with Block2 and Size2
    assert block_value(first) == (0, True, 6) and first.payload == data[:1024]


@pytest_twisted.ensureDeferred
async def test_a_download_resumes_where_it_stopped(node, rest):
    """A device downloads half of the package, goes away, and fetches the rest from the next block."""
    profile, _device = await setup(rest)
    data = os.urandom(20_000)
    info = await package(rest, profile["id"]["id"], data)
    await assign_profile(rest, profile, info["id"]["id"])
    parts = []
    first = await open_client(("127.0.0.1", node.coap_address[1]))
    for number in range(10):
        parts.append((await first.request(GET, "/fw/OTA-TOKEN", block2=(number, False, 6))).payload)
    await first.port.stopListening()
    second = await open_client(("127.0.0.1", node.coap_address[1]))  # a new port, as after a reboot
    number = 10
    while True:
        answer = await second.request(GET, "/fw/OTA-TOKEN", block2=(number, False, 6))
        parts.append(answer.payload)
        if not block_value(answer)[1]:
            break
        number += 1
    await second.port.stopListening()
    assert b"".join(parts) == data


@pytest_twisted.ensureDeferred
async def test_chunks_queries_and_own_packages(node, coap, rest):
    profile, device = await setup(rest)
    missing = await coap.request(GET, "/fw/OTA-TOKEN")
    assert code_text(missing.code) == "4.04"
    data = os.urandom(3000)
    info = await package(rest, profile["id"]["id"], data, version="1.0")
    await assign_profile(rest, profile, info["id"]["id"])
    chunk = await coap.request(GET, "/fw/OTA-TOKEN", query=["title=fw", "version=1.0", "size=512", "chunk=2"])
    assert code_text(chunk.code) == "2.05" and chunk.payload == data[1024:1536]
    last = await coap.request(GET, "/fw/OTA-TOKEN", query=["size=1000", "chunk=3"])
    assert not last.payload  # past the end: empty, as ThingsBoard
    for query in (["title=other"], ["version=9"], ["size=x"], ["size=2000", "chunk=0"]):
        answer = await coap.request(GET, "/fw/OTA-TOKEN", query=query)
        assert code_text(answer.code) == "4.00", query
    assert code_text((await coap.request(GET, "/sw/OTA-TOKEN")).code) == "4.04"
    assert code_text((await coap.request(GET, "/fw/NO-SUCH-TOKEN")).code) == "4.01"
    assert code_text((await coap.request(GET, "/fw")).code) == "4.01"  # no token over plain CoAP
    assert code_text((await coap.request(coap_post(), "/fw/OTA-TOKEN")).code) == "4.05"
    # the device's own package wins over its profile's
    own_data = os.urandom(100)
    own = await package(rest, profile["id"]["id"], own_data, version="1.1")
    status, saved = await rest.post("/api/device", {**device, "firmwareId": {"id": own["id"]["id"]}})
    assert status == 200 and saved["firmwareId"]["id"] == own["id"]["id"], saved
    answer = await coap.request(GET, "/fw/OTA-TOKEN")
    assert answer.payload == own_data and block_value(answer) is None
    status, attrs = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/attributes/SHARED_SCOPE")
    assert {a["key"]: a["value"] for a in attrs}["fw_version"] == "1.1"
    status, listed = await rest.get(f"/api/otaPackage/{own['id']['id']}/devices?pageSize=10&page=0")
    assert [d["id"]["id"] for d in listed["data"]] == [device["id"]["id"]]
    status, listed = await rest.get(f"/api/otaPackage/{info['id']['id']}/devices?pageSize=10&page=0")
    assert listed["data"] == []
    status, saved = await rest.post("/api/device", {**device, "firmwareId": None})
    assert saved.get("firmwareId") is None
    answer = await coap.request(GET, "/fw/OTA-TOKEN", query=["size=16", "chunk=0"])
    assert answer.payload == data[:16]  # the profile's again


def coap_post():
    return tx.POST


@pytest_twisted.ensureDeferred
async def test_progress_from_telemetry_per_package_and_in_metrics(node, coap, rest):
    profile, device = await setup(rest)
    info = await package(rest, profile["id"]["id"], os.urandom(100))
    await assign_profile(rest, profile, info["id"]["id"])
    status, _ = await rest.post("/api/device?accessToken=OTA-TOKEN-2", {"name": "dev-2", "type": "ota-profile"})
    assert status == 200
    answer = await coap.request(tx.POST, "/api/v1/OTA-TOKEN/telemetry", b'{"fw_state":"FAILED","fw_error":"bad crc"}')
    assert code_text(answer.code) == "2.01"
    status, listed = await rest.get(f"/api/otaPackage/{info['id']['id']}/devices?pageSize=10&page=0")
    assert status == 200 and listed["totalElements"] == 2
    states = {d["name"]: (d["otaState"], d["otaError"]) for d in listed["data"]}
    assert states == {"dev-OTA-TOKEN": ("FAILED", "bad crc"), "dev-2": (None, None)}
    await rest.get("/metrics")  # the first scrape starts a count
    for _ in range(50):
        status, text = await rest.get("/metrics")
        text = text.decode() if isinstance(text, bytes) else str(text)
        if 'tbcoap_ota_devices{state="FAILED",type="FIRMWARE"} 1.0' in text:
            break
        await deferLater(0.1)
        node.core.ota._counted_at = None  # (a test need not wait a minute for the next count)
    assert 'tbcoap_ota_devices{state="FAILED",type="FIRMWARE"} 1.0' in text
    assert 'tbcoap_ota_devices{state="NONE",type="FIRMWARE"} 1.0' in text


@pytest_twisted.ensureDeferred
async def test_a_package_over_max_ota_size_is_refused_and_leaves_nothing(start_node):
    from tests.conftest import Rest
    node = await start_node("--max-ota-size", "100KiB")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    profile, _device = await setup(rest)
    status, info = await rest.post("/api/otaPackage", {"title": "big", "version": "1", "type": "FIRMWARE",
                                                       "deviceProfileId": {"id": profile["id"]["id"]}})
    status, body = await upload(rest, f"/api/otaPackage/{info['id']['id']}", os.urandom(300_000))
    assert status == 400 and "max-ota-size" in body["message"], body
    status, again = await rest.get(f"/api/otaPackage/info/{info['id']['id']}")
    assert again["hasData"] is False
    status, body = await upload(rest, f"/api/otaPackage/{info['id']['id']}", os.urandom(100 * 1024))
    assert status == 200 and body["dataSize"] == 100 * 1024
    chunks = await node.store._read(lambda conn: conn.execute("SELECT count(*) FROM ota_chunks").fetchone()[0])
    assert chunks == 2  # the refused upload's chunks were removed


@pytest_twisted.ensureDeferred
async def test_a_provisioned_device_gets_its_profiles_package_attributes(node, coap, rest):
    status, profile = await rest.post("/api/deviceProfile", {
        "name": "ota-prov", "provisionType": "ALLOW_CREATE_NEW_DEVICES", "provisionDeviceKey": "ota-key",
        "provisionDeviceSecret": "ota-secret"})
    assert status == 200, profile
    info = await package(rest, profile["id"]["id"], os.urandom(64), version="5.5")
    await assign_profile(rest, profile, info["id"]["id"])
    body = json.dumps({"deviceName": "ota-prov-1", "provisionDeviceKey": "ota-key",
                       "provisionDeviceSecret": "ota-secret"}).encode()
    answer = await coap.request(tx.POST, "/api/v1/provision", body)
    assert json.loads(answer.payload)["status"] == "SUCCESS"
    status, device = await rest.get("/api/tenant/device?deviceName=ota-prov-1")
    status, attrs = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/attributes/SHARED_SCOPE")
    assert {a["key"]: a["value"] for a in attrs}["fw_version"] == "5.5"
