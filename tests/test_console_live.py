"""The web console on live subscriptions, and its management buttons, in a real headless Chromium
against a real ``twistd -n tbcoap`` (the helpers and fixtures of tests/test_console.py)."""

from __future__ import annotations

import time
import urllib.request
import uuid

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from tests.blocking import rest
from tests.test_console import (browser, click, coap_device, css, make_device, no_script_errors,  # noqa: F401
                                open_device, row_text, shows, sign_in, text_of, wait, go, listed_names)


def live(driver):
    """Wait until the page's live socket is up (the header says so)."""
    wait(driver).until(lambda d: d.find_element(By.ID, "live-state").get_attribute("data-state") == "live")


def test_the_policy_lets_the_page_reach_its_own_socket_only(server):
    with urllib.request.urlopen(server.url + "/") as answer:
        csp = answer.headers["Content-Security-Policy"]
    host = server.url.split("://", 1)[1]
    assert f"connect-src 'self' ws://{host} wss://{host};" in csp
    request = urllib.request.Request(server.url + "/", headers={"Host": "evil\"; script-src *"})
    with urllib.request.urlopen(request) as answer:  # a Host that is no plain host adds nothing
        assert "connect-src 'self';" in answer.headers["Content-Security-Policy"]


def test_a_coap_post_appears_within_a_second_without_a_reload(browser, server, coap_device):
    device_id, name, token = make_device(server, "live")
    device = coap_device(token)
    assert device.post("telemetry", {"temperature": 20}) == "2.01"
    sign_in(browser, server)
    open_device(browser, device_id, name)
    live(browser)
    wait(browser).until(shows("#latest-telemetry tr[data-key=temperature] td.value", "20"))
    wait(browser).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "1")
    browser.execute_script("window.notReloaded = true")

    for value in (21.5, 22.5):  # each post, not only the first
        assert device.post("telemetry", {"temperature": value, "humidity": 40}) == "2.01"
        posted = time.monotonic()
        wait(browser, 5).until(shows("#latest-telemetry tr[data-key=temperature] td.value", str(value)))
        assert time.monotonic() - posted < 1.0, "the post took more than a second to appear"
    assert "Live: updated as the device sends" in text_of(browser, "#latest-refreshed")
    # the chart's newest points and the new key follow too (its polling is off while live)
    wait(browser, 5).until(lambda d: int(d.find_element(By.ID, "chart-summary").get_attribute("data-points")) >= 2)
    wait(browser, 5).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-keys input[value=humidity]"))
    # the attributes and the device's state as the server writes them (every 5 s)
    rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/SERVER_SCOPE", {"room": "kitchen"})
    wait(browser, 5).until(shows("#attributes-SERVER_SCOPE tr[data-key=room] td.value", "kitchen"))
    wait(browser, 15).until(shows("#device-state", "Active"))
    assert browser.execute_script("return window.notReloaded") is True


def test_a_dropped_socket_polls_then_reconnects(browser, server, coap_device):
    device_id, name, token = make_device(server, "drop")
    device = coap_device(token)
    sign_in(browser, server)
    open_device(browser, device_id, name)
    live(browser)
    browser.execute_script("import('/console/js/live.js').then(m => m.live.socket.close())")
    wait(browser, 5).until(lambda d: d.find_element(By.ID, "live-state").get_attribute("data-state") == "polling")
    live(browser)  # opened again by itself; its subscriptions are sent again
    assert device.post("telemetry", {"temperature": 30}) == "2.01"
    wait(browser, 5).until(shows("#latest-telemetry tr[data-key=temperature] td.value", "30"))


def test_the_device_list_state_follows_the_device(browser, server, coap_device):
    device_id, name, token = make_device(server, "state")
    sign_in(browser, server)
    go(browser, "#/devices")
    box = wait(browser).until(EC.element_to_be_clickable((By.ID, "device-search")))
    box.clear()
    box.send_keys(name, Keys.ENTER)
    wait(browser).until(lambda d: "Inactive" in (row_text(d, name) or ""))
    live(browser)
    browser.execute_script("window.notReloaded = true")
    assert coap_device(token).post("telemetry", {"n": 1}) == "2.01"
    # the server writes the device's activity every 5 s; the row follows without a reload
    wait(browser, 15).until(lambda d: "Inactive" not in (row_text(d, name) or "Inactive"))
    assert "Active" in row_text(browser, name) and "never" not in row_text(browser, name)
    assert browser.execute_script("return window.notReloaded") is True


def test_admin_assigns_unassigns_and_deletes(browser, server):
    title = f"owner-{uuid.uuid4().hex[:6]}"
    status, customer = rest(server.url, "POST", "/api/customer", {"title": title})
    assert status == 200
    device_id, name, _ = make_device(server, "owned")
    sign_in(browser, server)
    open_device(browser, device_id, name)
    wait(browser).until(lambda d: title in [o.text for o in Select(d.find_element(By.ID, "owner-customer")).options])
    Select(browser.find_element(By.ID, "owner-customer")).select_by_visible_text(title)
    click(browser, css("#assign-device"))
    wait(browser).until(shows("#owner-notice", f'"{name}" now belongs to {title}.'))
    wait(browser).until(shows("#device-owner", title))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[1]["customerId"]["id"] == customer["id"]["id"]
    click(browser, css("#unassign-device"))
    wait(browser).until(shows("#owner-notice", "belongs to no customer now"))
    wait(browser).until(shows("#device-owner", "none (free device)"))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[1]["customerId"] is None

    rest(server.url, "POST", f"/api/customer/{customer['id']['id']}/device/{device_id}")
    go(browser, "#/customers")
    click(browser, css(f"#customers-table tr[data-customer-id='{customer['id']['id']}'] button.danger"))
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(shows("#customers-notice", f'Customer "{title}" deleted; its devices are free.'))
    wait(browser).until(lambda d: title not in (text_of(d, "#customers-table") or title))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[1]["customerId"] is None
    assert rest(server.url, "GET", "/api/auth/user", key=customer["apiKey"])[0] == 401


def test_profiles_make_default_and_delete(browser, server):
    spare, used = f"spare-{uuid.uuid4().hex[:6]}", f"used-{uuid.uuid4().hex[:6]}"
    spare_id = rest(server.url, "POST", "/api/deviceProfile", {"name": spare})[1]["id"]["id"]
    used_id = rest(server.url, "POST", "/api/deviceProfile", {"name": used})[1]["id"]["id"]
    make_device(server, "typed", type=used)
    sign_in(browser, server)
    go(browser, "#/profiles")
    row = f"#profiles-table tr[data-profile-id='{used_id}']"
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
    click(browser, css(f"{row} button.danger"))
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(shows("#profiles-notice [role=alert]", "used by devices"))
    click(browser, css(f"#profiles-table tr[data-profile-id='{spare_id}'] button.danger"))
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(shows("#profiles-notice", f'Device profile "{spare}" deleted.'))
    wait(browser).until(lambda d: spare not in (text_of(d, "#profiles-table") or spare))

    click(browser, css(f"{row} button:not(.danger)"))
    wait(browser).until(shows("#profiles-notice", f'"{used}" is the default profile now.'))
    wait(browser).until(shows(row, "the default"))
    default = rest(server.url, "GET", f"/api/deviceProfile/{used_id}")[1]
    assert default["default"] is True
    # put the node's default back for the other tests
    back = next(p for p in rest(server.url, "GET", "/api/deviceProfiles?pageSize=1000")[1]["data"]
                if p["name"] == "default")
    assert rest(server.url, "POST", f"/api/deviceProfile/{back['id']['id']}/default")[0] == 200


def test_a_customer_releases_its_device(browser, server, coap_device):
    title = f"rel-{uuid.uuid4().hex[:6]}"
    customer = rest(server.url, "POST", "/api/customer", {"title": title})[1]
    device_id, name, _ = make_device(server, "release")
    rest(server.url, "POST", f"/api/customer/{customer['id']['id']}/device/{device_id}")
    sign_in(browser, server, customer["apiKey"])
    open_device(browser, device_id, name)
    click(browser, css("#release-device"))
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(shows("#status", f'Device "{name}" released.'))
    wait(browser).until(lambda d: name not in listed_names(d))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[1]["customerId"] is None
