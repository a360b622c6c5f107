"""The console's device page for a device with thousands of keys (paged, never all keys at once),
in a real headless Chromium against a real ``twistd -n tbcoap`` (the
helpers and fixtures of tests/test_console.py)."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By

from tests.blocking import rest
from tests.test_dtls import DtlsServer
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

