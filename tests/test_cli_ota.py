"""``tbcoap ota`` against a live server: upload (streamed), list, assign to a profile and a device,
the devices of a package, delete; refusals exit non-zero with a message."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

from tests.blocking import rest
from tests.test_cli import ok, tbcoap


def test_upload_list_assign_devices_delete(server, tmp_path):
    profile = f"ota-cli-{uuid.uuid4().hex[:6]}"
    ok(tbcoap("profile", "create", profile, url=server.url))
    device = f"ota-dev-{uuid.uuid4().hex[:6]}"
    ok(tbcoap("device", "create", device, "--type", profile, "--token", f"T-{device}", url=server.url))
    data = os.urandom(150_000)
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    package = json.loads(ok(tbcoap("--json", "ota", "upload", str(path), "--title", "cam", "--version", "1.2",
                                   "--type", "firmware", "--profile", profile, url=server.url)))
    assert package["checksum"] == hashlib.sha256(data).hexdigest() and package["dataSize"] == len(data)
    assert package["fileName"] == "image.bin"
    package_id = package["id"]["id"]
    listed = ok(tbcoap("ota", "list", "--page-size", "1000", url=server.url))
    assert package_id in listed and "cam" in listed
    # the same title and version again is refused, and a wrong checksum leaves no package behind
    again = tbcoap("ota", "upload", str(path), "--title", "cam", "--version", "1.2", "--profile", profile,
                   url=server.url)
    assert again.returncode == 1 and "exists" in again.stderr, again.stderr
    wrong = tbcoap("ota", "upload", str(path), "--title", "cam", "--version", "1.3", "--profile", profile,
                   "--checksum", "00", url=server.url)
    assert wrong.returncode == 1 and "checksum" in wrong.stderr
    assert "1.3" not in ok(tbcoap("ota", "list", "--page-size", "1000", url=server.url))
    missing = tbcoap("ota", "upload", str(tmp_path / "nope.bin"), "--title", "x", "--version", "1",
                     "--profile", profile, url=server.url)
    assert missing.returncode == 2 and "nope.bin" in missing.stderr

    ok(tbcoap("ota", "assign", "--profile", profile, package_id, url=server.url))
    shown = ok(tbcoap("ota", "devices", package_id, url=server.url))
    assert device in shown
    status, found = rest(server.http_url, "GET", f"/api/tenant/devices?deviceName={device}")
    status, attrs = rest(server.http_url, "GET",
                         f"/api/plugins/telemetry/DEVICE/{found['id']['id']}/values/attributes/SHARED_SCOPE")
    assert {a["key"]: a["value"] for a in attrs}["fw_version"] == "1.2"
    refused = tbcoap("ota", "delete", package_id, url=server.url)
    assert refused.returncode == 1 and "cannot be deleted" in refused.stderr
    ok(tbcoap("ota", "assign", "--device", device, "none", "--type", "FIRMWARE", url=server.url))
    ok(tbcoap("ota", "assign", "--profile", profile, "none", "--type", "FIRMWARE", url=server.url))
    status, attrs = rest(server.http_url, "GET",
                         f"/api/plugins/telemetry/DEVICE/{found['id']['id']}/values/attributes/SHARED_SCOPE")
    assert "fw_version" not in {a["key"] for a in attrs}
    usage = tbcoap("ota", "assign", "--profile", profile, "none", url=server.url)
    assert usage.returncode == 2 and "--type" in usage.stderr
    ok(tbcoap("ota", "delete", package_id, url=server.url))
    assert package_id not in ok(tbcoap("ota", "list", "--page-size", "1000", url=server.url))
