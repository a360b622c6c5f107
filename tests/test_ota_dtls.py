"""A certificate device downloads its firmware over CoAPS without a token (``/fw``), with libcoap's
``coap-client-openssl``, byte-exact (ThingsBoard's paths need a token, so such devices cannot there)."""

from __future__ import annotations

import hashlib
import os

import pytest_twisted

from tests.conftest import Rest, require_tool
from tests.test_dtls_clients import HOW, dtls_node, pki, run  # noqa: F401  (fixtures)
from tests.test_ota_download import assign_profile, package


@pytest_twisted.ensureDeferred
async def test_certificate_device_downloads_without_token(dtls_node, pki, tmp_path):  # noqa: F811
    binary = require_tool("coap-client-openssl", HOW)
    rest = Rest(f"http://127.0.0.1:{dtls_node.http_address[1]}")
    _, ca_file, device_cert = pki
    status, profile = await rest.post("/api/deviceProfile", {"name": "secure-ota", "provisionType": "DISABLED"})
    assert status == 200
    status, device = await rest.post("/api/device?accessToken=OTA-DTLS", {"name": "secure-ota-1",
                                                                          "type": "secure-ota"})
    status, body = await rest.post("/api/device/credentials", {
        "deviceId": device["id"], "credentialsType": "X509_CERTIFICATE",
        "credentialsValue": device_cert.cert_pem.decode()})
    assert status == 200, body
    cert, key = device_cert.write(tmp_path, "device")
    data = os.urandom(50_000)
    info = await package(rest, profile["id"]["id"], data, title="secure", version="3", ota_type="SOFTWARE")
    await assign_profile(rest, profile, info["id"]["id"], field="softwareId")
    out = tmp_path / "sw.bin"
    base = f"coaps://127.0.0.1:{dtls_node.coaps_address[1]}"
    _, err, code = await run(binary, "-C", ca_file, "-c", cert, "-j", key, "-b", "512", "-m", "get",
                             f"{base}/sw?title=secure&version=3", "-o", str(out))
    assert code == 0, err
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    _, err, code = await run(binary, "-C", ca_file, "-c", cert, "-j", key, "-m", "get", f"{base}/fw")
    assert code == 0 and "4.04" in err + _, err
