"""The console's device page for a device with thousands of keys (paged, never all keys at once)
and its PSK credentials form, in a real headless Chromium against a real ``twistd -n tbcoap`` (the
helpers and fixtures of tests/test_console.py)."""

from __future__ import annotations

import time
import uuid

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.blocking import rest
from tests.test_dtls import DtlsServer
from tests.test_dtls_psk import KEY_HEX, KEY_TEXT, libcoap
from tests.test_console import (browser, click, coap_device, css, make_device, no_script_errors,  # noqa: F401
                                open_device, shows, sign_in, text_of, wait)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A node serving CoAPS too, whose devices may have 2,000 keys (more than the default cap, as a
    raised cap allows)."""
    node = DtlsServer(tmp_path_factory.mktemp("pages"), "--max-device-keys", "2000")
    node.coap_address = node.process.coap_address  # for the console tests' CoAP devices
    yield node
    node.stop()


def rows(driver, table):
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr[data-key]')].map(r => r.dataset.key)", table)


def test_a_device_with_1500_keys_is_shown_page_by_page(browser, server, coap_device):
    device_id, name, token = make_device(server, "many")
    keys = [f"key{n:04d}" for n in range(1500)]
    for start in range(0, 1500, 500):
        status, body = rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/timeseries/ANY",
                            {key: n for n, key in enumerate(keys[start:start + 500], start)})
        assert status == 200, body
    shared = {f"s{n:03d}": n for n in range(120)}
    assert rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", shared)[0] == 200

    sign_in(browser, server)
    started = time.monotonic()
    open_device(browser, device_id, name)
    wait(browser).until(lambda d: rows(d, "#latest-telemetry") == keys[:50])
    assert time.monotonic() - started < 10
    assert text_of(browser, "#latest-count") == "1500 keys, 50 a page."
    assert text_of(browser, "#latest-pages .page-info") == "page 1 of 30"
    assert text_of(browser, "#latest-telemetry tr[data-key=key0007] td.value") == "7"
    # the chart offers the keys of the page shown, the first numeric one ticked
    wait(browser).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "1")
    offered = browser.execute_script("return [...document.querySelectorAll('#chart-keys input')].map(b => b.value)")
    assert offered == keys[:50]
    assert browser.execute_script("return [...document.querySelectorAll('#chart-keys input:checked')]"
                                  ".map(b => b.value)") == ["key0000"]

    click(browser, css("#latest-pages button:last-child"))  # Next
    wait(browser).until(lambda d: rows(d, "#latest-telemetry") == keys[50:100])
    assert text_of(browser, "#latest-pages .page-info") == "page 2 of 30"
    offered = browser.execute_script("return [...document.querySelectorAll('#chart-keys input')].map(b => b.value)")
    assert offered == ["key0000", *keys[50:100]]  # the ticked key stays

    # a live value of a key on the page shows; one of another page adds no row
    device = coap_device(token)
    assert device.post("telemetry", {"key0060": 6000, "key1400": 1}) == "2.01"
    wait(browser).until(shows("#latest-telemetry tr[data-key=key0060] td.value", "6000"))
    assert rows(browser, "#latest-telemetry") == keys[50:100]

    # attributes: a page of each scope
    wait(browser).until(lambda d: rows(d, "#attributes-SHARED_SCOPE") == sorted(shared)[:50])
    assert text_of(browser, "#attr-SHARED_SCOPE-count") == "120 keys, 50 a page."
    click(browser, css("#attr-SHARED_SCOPE-pages button:last-child"))
    wait(browser).until(lambda d: rows(d, "#attributes-SHARED_SCOPE") == sorted(shared)[50:100])
    click(browser, css("#attr-SHARED_SCOPE-pages button:last-child"))
    wait(browser).until(lambda d: rows(d, "#attributes-SHARED_SCOPE") == sorted(shared)[100:])
    assert text_of(browser, "#attr-SHARED_SCOPE-pages .page-info") == "page 3 of 3"
    assert not browser.find_elements(By.ID, "attr-CLIENT_SCOPE-pages")  # one page: no pager

    # every read of values the page made was a page or named its keys; no list of every key
    calls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                   ".filter(u => u.includes('/api/plugins/telemetry/'))")
    assert calls
    for url in calls:
        assert "/keys/" not in url, url
        if "/values/" in url and "startTs=" not in url:
            assert "pageSize=" in url or "keys=" in url, url


def test_the_admin_sets_a_pre_shared_key_and_the_device_talks_coaps_with_it(browser, server, coap_device):
    device_id, name, token = make_device(server, "psk")
    identity = f"meter-{uuid.uuid4().hex[:8]}"
    sign_in(browser, server)
    open_device(browser, device_id, name)
    browser.find_element(By.ID, "psk-identity").send_keys(identity)
    browser.find_element(By.ID, "psk-key").send_keys(KEY_HEX)
    click(browser, css("#psk-save"))
    dialog = wait(browser).until(EC.alert_is_present())
    assert identity in dialog.text and "stops working" in dialog.text
    dialog.accept()
    wait(browser).until(shows("#psk-notice", f'the pre-shared key of identity "{identity}"'))
    assert text_of(browser, "#device-psk-identity") == identity
    assert browser.find_element(By.ID, "psk-key").get_attribute("value") == ""  # not kept in the page
    assert KEY_HEX not in browser.page_source
    status, credentials = rest(server.url, "GET", f"/api/device/{device_id}/credentials")
    assert (credentials["credentialsType"], credentials["credentialsId"], credentials["credentialsValue"]) == \
        ("PSK", identity, None)
    # the token is gone; the key works over CoAPS on a path without a token
    assert coap_device(token).post("telemetry", {"t": 1}) == "4.01"
    done = libcoap("coap-client-openssl", identity, KEY_TEXT, "-m", "post", "-e", '{"kWh":12.5}',
                   f"coaps://127.0.0.1:{server.coaps[1]}/api/v1/telemetry")
    assert done.returncode == 0 and not done.stderr, done.stderr
    wait(browser).until(shows("#latest-telemetry tr[data-key=kWh] td.value", "12.5"))

    # shown again on demand; a bad key or a taken identity is refused beside the form
    browser.refresh()
    wait(browser).until(EC.element_to_be_clickable((By.ID, "show-token"))).click()
    wait(browser).until(shows("#device-token-box", f"Pre-shared key (CoAPS), identity: {identity}"))
    other_id, other_name, _ = make_device(server, "psk-other")
    open_device(browser, other_id, other_name)
    browser.find_element(By.ID, "psk-identity").send_keys(identity)
    browser.find_element(By.ID, "psk-key").send_keys(KEY_HEX)
    click(browser, css("#psk-save"))
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(shows("#psk-notice [role=alert]", "Setting the pre-shared key"))
    assert "400" in text_of(browser, "#psk-notice [role=alert]")
    key = browser.find_element(By.ID, "psk-key")
    key.clear()
    key.send_keys("abc")  # too short: the browser refuses to submit, nothing is sent
    browser.find_element(By.ID, "psk-identity").clear()
    browser.find_element(By.ID, "psk-identity").send_keys("fresh-identity")
    click(browser, css("#psk-save"))
    assert browser.execute_script("return document.getElementById('psk-key').validity.patternMismatch") is True
    assert rest(server.url, "GET", f"/api/device/{other_id}/credentials")[1]["credentialsType"] == "ACCESS_TOKEN"
