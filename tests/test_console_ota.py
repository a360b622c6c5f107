"""The console's Firmware page in headless Chromium against a live server: upload a package for a
profile (the file sent from disk), assign it to the profile, a device reports its state over CoAP,
and the package's page lists the device with it."""

from __future__ import annotations

import os
import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from tests.blocking import Coap, rest
from tests.test_console import browser, go, no_script_errors, sign_in, wait  # noqa: F401  (fixtures)


def test_upload_assign_and_progress(browser, server, tmp_path):  # noqa: F811
    profile = f"cons-ota-{uuid.uuid4().hex[:6]}"
    status, body = rest(server.http_url, "POST", "/api/deviceProfile", {"name": profile})
    assert status == 200
    token = f"CONS-{uuid.uuid4().hex[:8]}"
    status, device = rest(server.http_url, "POST", f"/api/device?accessToken={token}",
                          {"name": f"cons-dev-{token}", "type": profile})
    assert status == 200
    image = tmp_path / "camera.bin"
    image.write_bytes(os.urandom(120_000))

    sign_in(browser, server)
    go(browser, "#/ota")
    wait(browser).until(lambda d: d.find_element(By.ID, "packages-summary").text)
    browser.find_element(By.ID, "ota-file").send_keys(str(image))
    browser.find_element(By.ID, "ota-title").send_keys("camera")
    browser.find_element(By.ID, "ota-version").send_keys("7.0")
    Select(browser.find_element(By.ID, "ota-profile")).select_by_visible_text(profile)
    browser.find_element(By.ID, "upload-package").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "new-package-notice"), "120000 bytes"))
    row = wait(browser).until(lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, "#packages-table tbody tr")
                                              if "camera" in r.text and profile in r.text), None))
    row.find_element(By.XPATH, ".//button[text()='Assign to profile']").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "packages-notice"), "is assigned"))

    status, attrs = rest(server.http_url, "GET",
                         f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/attributes/SHARED_SCOPE")
    assert {a["key"]: a["value"] for a in attrs}["fw_version"] == "7.0"
    coap = Coap(server.coap_address)
    try:
        assert coap.request(2, f"/api/v1/{token}/telemetry", b'{"fw_state":"DOWNLOADING"}') == 0x41
    finally:
        coap.close()

    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#packages-table tbody tr")
               if "camera" in r.text and profile in r.text)
    row.find_element(By.LINK_TEXT, "camera").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "package-devices"), "DOWNLOADING"))
    assert f"cons-dev-{token}" in browser.find_element(By.ID, "package-devices").text
    assert "camera 7.0" in browser.find_element(By.TAG_NAME, "h1").text
