"""The web console (docs/console.md) in a real headless Chromium, driven by selenium, against a
real ``twistd -n tbcoap``, with devices played over CoAP on plain UDP sockets.

Set TBCOAP_SCREENSHOTS=1 to write the documentation's screenshots to docs/images/console-*.png.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest
from txthings import coap as tx

from tests.blocking import UdpDevice, rest
from tests.coapclient import CON, GET, POST, build, code_text
from tests.conftest import ADMIN_KEY, require_tool

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

HOW = "as root: apt-get install chromium chromium-driver (or run bash tests/install-clients.sh)"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOTS = os.environ.get("TBCOAP_SCREENSHOTS") == "1"
XSS_NAME = "<img src=x onerror=alert(1)>"


# -- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium", HOW)
    chromedriver = require_tool("chromedriver", HOW)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def no_script_errors(browser):
    """No test may leave a CSP violation or an uncaught script error in the browser's console."""
    browser.get_log("browser")
    yield
    bad = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
           and any(word in entry["message"] for word in ("Content Security Policy", "Uncaught", "Error:"))]
    assert not bad, bad


def wait(driver, timeout=10):
    return WebDriverWait(driver, timeout)


def shot(driver, name, height=None):
    """Save docs/images/console-<name>.png when TBCOAP_SCREENSHOTS=1 (``height``: a taller viewport)."""
    if not SCREENSHOTS:
        return
    os.makedirs(os.path.join(ROOT, "docs", "images"), exist_ok=True)
    if height:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
        driver.execute_script("window.scrollTo(0, 0)")
    try:
        driver.save_screenshot(os.path.join(ROOT, "docs", "images", f"console-{name}.png"))
    finally:
        if height:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def open_signed_out(driver, server):
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    return wait(driver).until(EC.element_to_be_clickable((By.ID, "api-key")))


def sign_in(driver, server, key=ADMIN_KEY):
    open_signed_out(driver, server).send_keys(key, Keys.ENTER)
    wait(driver).until(EC.visibility_of_element_located((By.ID, "who")))
    wait(driver).until(lambda d: d.find_element(By.ID, "devices-summary").text)


def go(driver, route):
    driver.execute_script("location.hash = arguments[0]", route)


def open_device(driver, device_id, name):
    go(driver, f"#/device/{device_id}")
    wait(driver).until(EC.text_to_be_present_in_element((By.ID, "device-title"), name))


def search(driver, text):
    box = wait(driver).until(EC.element_to_be_clickable((By.ID, "device-search")))
    box.clear()
    box.send_keys(text, Keys.ENTER)
    wait(driver).until(EC.text_to_be_present_in_element((By.ID, "devices-summary"), f'matching "{text}"'))


def device_row(driver, name):
    """The device list's row whose link reads ``name`` exactly, or None."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#devices-table tbody tr')]"
        ".find(row => row.querySelector('a') && row.querySelector('a').textContent === arguments[0]) || null", name)


def listed_names(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#devices-table tbody tr a')].map(a => a.textContent)")


def alert_text(driver):
    return driver.find_element(By.ID, "alerts").text


def make_device(server, prefix, **fields):
    """A device created over REST with a token of ours: (id, name, token)."""
    name, token = f"{prefix}-{uuid.uuid4().hex[:8]}", f"tok-{uuid.uuid4().hex[:16]}"
    status, device = rest(server.url, "POST", f"/api/device?accessToken={token}", {"name": name, **fields})
    assert status == 200, device
    return device["id"]["id"], name, token


def cell(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


class Device(UdpDevice):
    """A device over a blocking UDP socket: requests, observations, their notifications."""

    def __init__(self, server, token):
        super().__init__(server.coap_address, token)

    def request(self, method, path, payload=b""):
        """A CON request: the code of its answer (as text) and its payload."""
        token = os.urandom(4)
        self.send(build(method, path, payload, mtype=CON, mid=self.next_mid(), token=token))
        answer = self.receive(lambda m: m.token == token and m.code != tx.EMPTY)
        self.ack(answer)
        return code_text(answer.code), answer.payload

    def post(self, feature, body):
        return self.request(POST, f"/api/v1/{self.token}/{feature}", json.dumps(body).encode())[0]

    def observe(self, feature):
        """Observe /attributes or /rpc; the registration's JSON."""
        self.observation = os.urandom(4)
        self.send(build(GET, f"/api/v1/{self.token}/{feature}", observe=0, mid=self.next_mid(), token=self.observation))
        first = self.receive(lambda m: m.token == self.observation)
        assert code_text(first.code) == "2.05", (code_text(first.code), first.payload)
        self.ack(first)
        return json.loads(first.payload or b"{}")

    def notification(self, timeout=10.0):
        """The next notification of the observation (acknowledged): its JSON."""
        message = self.receive(lambda m: m.token == self.observation, timeout)
        assert code_text(message.code) == "2.05", (code_text(message.code), message.payload)
        self.ack(message)
        return json.loads(message.payload)


@pytest.fixture
def coap_device(server):
    devices = []

    def make(token):
        devices.append(Device(server, token))
        return devices[-1]

    yield make
    for device in devices:
        device.close()


# -- the tests -------------------------------------------------------------------------------

def test_sign_in_keeps_the_key_in_this_tab_only(browser, server):
    with urllib.request.urlopen(server.url + "/") as answer:
        csp = answer.headers["Content-Security-Policy"]
        page = answer.read().decode()
    assert "script-src 'self'" in csp and "<script>" not in page and "style=" not in page

    field = open_signed_out(browser, server)
    shot(browser, "sign-in")
    field.send_keys("not-the-key", Keys.ENTER)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "alerts"), "invalid key"))
    assert browser.find_element(By.ID, "alerts").get_attribute("role") == "alert"
    assert "401" in alert_text(browser)
    assert browser.execute_script("return sessionStorage.length") == 0

    field.clear()
    field.send_keys(ADMIN_KEY, Keys.ENTER)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "who-name"), "administrator"))
    stored = browser.execute_script("return Object.values(sessionStorage)")
    assert stored == [ADMIN_KEY]
    assert ADMIN_KEY not in browser.execute_script("return JSON.stringify(localStorage)")
    assert ADMIN_KEY not in browser.current_url
    assert browser.execute_script("return document.cookie") == ""
    assert alert_text(browser) == ""  # the failed attempt's message is gone

    browser.find_element(By.ID, "sign-out").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "api-key")))
    assert browser.execute_script("return sessionStorage.length") == 0
    assert not browser.find_element(By.ID, "nav").is_displayed()


def test_create_device_then_its_token_works_over_coap(browser, server, coap_device):
    sign_in(browser, server)
    name = f"console-{uuid.uuid4().hex[:8]}"
    browser.find_element(By.ID, "new-device-type").send_keys("thermostat")
    browser.find_element(By.ID, "new-device-label").send_keys("Kitchen")
    browser.find_element(By.ID, "new-device-name").send_keys(name, Keys.ENTER)
    wait(browser).until(lambda d: device_row(d, name))
    row = device_row(browser, name)
    assert "thermostat" in row.text and "Kitchen" in row.text and "Inactive" in row.text and "never" in row.text

    row.find_element(By.TAG_NAME, "a").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), name))
    device_id = browser.current_url.rsplit("/", 1)[1]
    browser.find_element(By.ID, "show-token").click()
    token = wait(browser).until(EC.visibility_of_element_located((By.ID, "device-token"))).text
    assert rest(server.url, "GET", f"/api/device/{device_id}/credentials")[1]["credentialsId"] == token

    browser.execute_script("window.notReloaded = true")
    assert coap_device(token).post("telemetry", {"temperature": 21.5, "humidity": 40}) == "2.01"
    # the page's own refresh (every 5 s) shows the value, without a reload
    wait(browser, 12).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "#latest-telemetry tr[data-key=temperature] td.value"), "21.5"))
    assert cell(browser, "#latest-telemetry tr[data-key=humidity] td.value") == "40"
    wait(browser, 12).until(EC.text_to_be_present_in_element((By.ID, "device-state"), "Active"))
    assert browser.execute_script("return window.notReloaded") is True

    # a new random token: the old one is refused at once, the new one works
    browser.find_element(By.ID, "rotate-token").click()
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(lambda d: d.find_element(By.ID, "device-token").text not in ("", token))
    new_token = browser.find_element(By.ID, "device-token").text
    assert len(new_token) == 20 and "/" not in new_token
    assert coap_device(token).post("telemetry", {"temperature": 1}) == "4.01"
    assert coap_device(new_token).post("telemetry", {"temperature": 22}) == "2.01"

    browser.back()
    wait(browser).until(lambda d: device_row(d, name))
    row = device_row(browser, name)
    assert "Active" in row.text and "Inactive" not in row.text and "never" not in row.text


def test_chart_draws_posted_points(browser, server):
    device_id, name, _ = make_device(server, "chart", type="thermostat")
    now = int(time.time() * 1000)
    points = [{"ts": now - k * 5 * 60000, "values": {"temperature": 20 + k, "humidity": 40 + k % 3}}
              for k in range(1, 12)]
    assert rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/timeseries/ANY", points)[0] == 200

    sign_in(browser, server)
    open_device(browser, device_id, name)
    box = wait(browser).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#chart-keys input[value=temperature]")))
    Select(browser.find_element(By.ID, "chart-range")).select_by_visible_text("Last hour")
    box.click()
    wait(browser).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "11")
    summary = browser.find_element(By.ID, "chart-summary").text
    assert "avg per 10 s bucket" in summary
    assert "temperature: 11 points, min 21, max 31, last 21" in summary
    size = browser.execute_script(
        "const c = document.querySelector('#chart canvas'); const r = c.getBoundingClientRect();"
        "return [c.width, c.height, r.width, r.height]")
    assert all(n > 0 for n in size), size
    assert browser.find_element(By.ID, "chart").get_attribute("data-points") == "11"

    # a longer range picks longer buckets: five minutes for a day, still one point in each
    Select(browser.find_element(By.ID, "chart-range")).select_by_visible_text("Last day")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "chart-summary"), "avg per 5 min bucket"))
    assert browser.find_element(By.ID, "chart-summary").get_attribute("data-points") == "11"

    Select(browser.find_element(By.ID, "chart-range")).select_by_visible_text("Last hour")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "chart-summary"), "avg per 10 s bucket"))

    # a new point arrives: the chart's own refresh (every 10 s) draws it
    assert rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/timeseries/ANY",
                {"temperature": 30})[0] == 200
    wait(browser, 15).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "12")
    assert "temperature: 12 points, min 21, max 31, last 30" in browser.find_element(By.ID, "chart-summary").text

    # a second key: one more line
    browser.find_element(By.CSS_SELECTOR, "#chart-keys input[value=humidity]").click()
    wait(browser).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "23")
    assert "humidity: 11 points, min 40, max 42" in browser.find_element(By.ID, "chart-summary").text
    shot(browser, "device", height=1300)


def test_shared_attribute_edit_reaches_an_observing_device(browser, server, coap_device):
    device_id, name, token = make_device(server, "attrs")
    device = coap_device(token)
    assert device.post("attributes", {"fw": "v1.0"}) == "2.01"
    assert device.observe("attributes") == {}

    sign_in(browser, server)
    open_device(browser, device_id, name)
    wait(browser).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "#attributes-CLIENT_SCOPE tr[data-key=fw] td.value"), "v1.0"))
    assert not browser.find_elements(By.ID, "attr-CLIENT_SCOPE-key")  # read-only
    assert not browser.find_elements(By.CSS_SELECTOR, "#attributes-CLIENT_SCOPE button")

    browser.find_element(By.ID, "attr-SHARED_SCOPE-key").send_keys("target")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-value").send_keys("21.5", Keys.ENTER)
    assert device.notification() == {"target": 21.5}
    wait(browser).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, "#attributes-SHARED_SCOPE tr[data-key=target] td.value"), "21.5"))

    browser.find_element(By.ID, "attr-SHARED_SCOPE-key").send_keys("mode")
    Select(browser.find_element(By.ID, "attr-SHARED_SCOPE-type")).select_by_value("text")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-value").send_keys("eco", Keys.ENTER)
    assert device.notification() == {"mode": "eco"}

    # not JSON: refused in the page, nothing sent
    browser.find_element(By.ID, "attr-SHARED_SCOPE-key").send_keys("bad")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-value").send_keys("{nope", Keys.ENTER)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "alerts"), "not JSON"))

    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attributes-SHARED_SCOPE tr[data-key=mode]"))
    browser.find_element(By.CSS_SELECTOR, "#attributes-SHARED_SCOPE tr[data-key=mode] button.danger").click()
    wait(browser).until(EC.alert_is_present()).accept()
    assert device.notification() == {"deleted": ["mode"]}
    status, shared = rest(server.url, "GET", f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SHARED_SCOPE")
    assert [(a["key"], a["value"]) for a in shared] == [("target", 21.5)]


def test_two_way_rpc_answered_by_the_device(browser, server, coap_device):
    device_id, name, token = make_device(server, "rpc")
    device = coap_device(token)
    assert device.observe("rpc") == {}

    sign_in(browser, server)
    open_device(browser, device_id, name)
    browser.find_element(By.ID, "rpc-params").send_keys('{"unit": "C"}')
    browser.find_element(By.ID, "rpc-method").send_keys("getTemp", Keys.ENTER)
    assert device.notification() == {"id": 1, "method": "getTemp", "params": {"unit": "C"}}
    assert device.post("rpc/1", {"temperature": 21.5}) == "2.01"
    reply = wait(browser, 15).until(EC.visibility_of_element_located((By.ID, "rpc-reply")))
    assert json.loads(reply.text) == {"temperature": 21.5}

    wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#rpc-history tbody tr"), "SUCCESSFUL"))
    row = browser.find_element(By.CSS_SELECTOR, "#rpc-history tbody tr")
    assert "getTemp" in row.text and "two-way" in row.text
    assert json.loads(row.find_element(By.CSS_SELECTOR, ".rpc-response").text) == {"temperature": 21.5}

    # one-way: delivered once the device has it
    browser.find_element(By.ID, "rpc-kind-oneway").click()
    method = browser.find_element(By.ID, "rpc-method")
    method.clear()
    method.send_keys("blink", Keys.ENTER)
    assert device.notification()["method"] == "blink"
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "rpc-result"), '"blink" was delivered'))
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rpc-history tbody tr")) == 2)
    assert "one-way" in browser.find_element(By.CSS_SELECTOR, "#rpc-history tbody tr").text


def test_customer_key_sees_only_its_devices(browser, server, coap_device):
    sign_in(browser, server)
    go(browser, "#/customers")
    title = f"acme-{uuid.uuid4().hex[:6]}"
    wait(browser).until(EC.element_to_be_clickable((By.ID, "customer-title"))).send_keys(title, Keys.ENTER)
    key = wait(browser).until(EC.visibility_of_element_located((By.ID, "new-customer-key"))).text
    assert len(key) == 48
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "customers-table"), title))
    shot(browser, "customers")

    mine_id, mine, token = make_device(server, "mine")
    other_id, other, _ = make_device(server, "other")
    assert coap_device(token).post("claim", {"secretKey": "s3cret"}) == "2.01"

    sign_in(browser, server, key)
    assert title in browser.find_element(By.ID, "who-name").text
    assert not browser.find_element(By.CSS_SELECTOR, "#nav a[href='#/customers']").is_displayed()
    assert listed_names(browser) == []
    browser.find_element(By.ID, "claim-name").send_keys(mine)
    browser.find_element(By.ID, "claim-secret").send_keys("s3cret", Keys.ENTER)
    wait(browser).until(lambda d: listed_names(d) == [mine])
    assert title in device_row(browser, mine).text  # the owner
    assert not browser.find_elements(By.ID, "new-device-name")

    go(browser, f"#/device/{other_id}")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), "Device not found"))
    assert "not found" in alert_text(browser) and "404" in alert_text(browser)
    assert not browser.find_elements(By.ID, "latest-telemetry")

    open_device(browser, mine_id, mine)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-owner"), title))
    assert browser.find_elements(By.ID, "latest-telemetry") and browser.find_elements(By.ID, "chart-keys")
    for admin_only in ("show-token", "rpc-method", "rpc-history", "attr-SHARED_SCOPE-key"):
        assert not browser.find_elements(By.ID, admin_only), admin_only
    assert alert_text(browser) == ""  # no call the key may not make

    go(browser, "#/customers")
    wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Not available"))


def test_device_profiles_page(browser, server):
    sign_in(browser, server)
    go(browser, "#/profiles")
    name = f"sensors-{uuid.uuid4().hex[:6]}"
    wait(browser).until(EC.element_to_be_clickable((By.ID, "profile-name"))).send_keys(name)
    Select(browser.find_element(By.ID, "profile-provision-type")).select_by_value("ALLOW_CREATE_NEW_DEVICES")
    browser.find_element(By.ID, "profile-provision-key").send_keys(f"key-{name}")
    browser.find_element(By.ID, "profile-provision-secret").send_keys("secret", Keys.ENTER)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "profiles-table"), name))
    profiles = rest(server.url, "GET", "/api/deviceProfiles?pageSize=1000")[1]["data"]
    assert [(p["provisionType"], p["provisionDeviceKey"]) for p in profiles if p["name"] == name] == \
        [("ALLOW_CREATE_NEW_DEVICES", f"key-{name}")]
    # a duplicate name: the API's message, in the alert region
    browser.find_element(By.ID, "profile-name").send_keys(name, Keys.ENTER)
    wait(browser).until(lambda d: "Creating the device profile" in alert_text(d) and "400" in alert_text(d))


def test_values_are_escaped(browser, server):
    status, device = rest(server.url, "POST", "/api/device", {"name": XSS_NAME, "label": "<b>bold</b>"})
    assert status == 200, device
    device_id = device["id"]["id"]
    rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"<i>k</i>": "<script>x</script>"})

    sign_in(browser, server)
    shot(browser, "devices")
    search(browser, "<img")
    wait(browser).until(lambda d: device_row(d, XSS_NAME))
    assert "<b>bold</b>" in device_row(browser, XSS_NAME).text
    assert browser.execute_script("return document.querySelectorAll('img, b, i, #view script').length") == 0

    device_row(browser, XSS_NAME).find_element(By.TAG_NAME, "a").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), XSS_NAME))
    assert browser.find_element(By.ID, "device-title").text == XSS_NAME
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "attributes-SHARED_SCOPE"), "<script>x</script>"))
    assert "<i>k</i>" in browser.find_element(By.ID, "attributes-SHARED_SCOPE").text
    assert browser.execute_script("return document.querySelectorAll('img, b, i, #view script').length") == 0
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text


def test_narrow_screen_and_keyboard(browser, server):
    device_id, name, _ = make_device(server, "narrow", label="A label long enough to wrap on a phone screen")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 375, "height": 740, "deviceScaleFactor": 1, "mobile": False})
    try:
        open_signed_out(browser, server)
        assert browser.execute_script("return window.innerWidth") == 375

        def fits():
            return browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")

        def tab_to(script, wanted, limit=60):
            """Press Tab until ``script`` (run on document.activeElement) answers ``wanted``."""
            for _ in range(limit):
                if browser.execute_script(f"return document.activeElement.{script}") == wanted:
                    return browser.switch_to.active_element
                webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
            raise AssertionError(f"Tab never reached the element whose {script} is {wanted!r}")

        assert fits()
        tab_to("id", "api-key").send_keys(ADMIN_KEY, Keys.ENTER)
        wait(browser).until(lambda d: d.find_element(By.ID, "devices-summary").text)
        assert fits()
        tab_to("id", "device-search").send_keys(name, Keys.ENTER)
        wait(browser).until(lambda d: listed_names(d) == [name])
        assert fits()
        # the device's link is reachable by Tab and opens its page with Enter
        tab_to("textContent", name).send_keys(Keys.ENTER)
        wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), name))
        assert browser.current_url.endswith(f"#/device/{device_id}")
        wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attributes-SERVER_SCOPE tbody tr"))
        assert fits()
        shot(browser, "narrow")
        go(browser, "#/customers")
        wait(browser).until(lambda d: d.find_element(By.ID, "customers-summary").text)
        assert fits()
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_delete_device_after_confirmation(browser, server):
    device_id, name, _ = make_device(server, "doomed")
    sign_in(browser, server)
    search(browser, name)
    wait(browser).until(lambda d: device_row(d, name))

    device_row(browser, name).find_element(By.CSS_SELECTOR, "button.danger").click()
    dialog = wait(browser).until(EC.alert_is_present())
    assert name in dialog.text
    dialog.dismiss()  # cancelled: nothing happens
    assert rest(server.url, "GET", f"/api/device/{device_id}")[0] == 200

    device_row(browser, name).find_element(By.CSS_SELECTOR, "button.danger").click()
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(lambda d: device_row(d, name) is None)
    assert listed_names(browser) == []
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "status"), "deleted"))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[0] == 404


def test_profile_payload_type_and_schemas(browser, server):
    sign_in(browser, server)
    go(browser, "#/profiles")
    name = f"proto-{uuid.uuid4().hex[:6]}"
    wait(browser).until(EC.element_to_be_clickable((By.ID, "profile-name"))).send_keys(name)
    assert not browser.find_element(By.ID, "profile-schemas").is_displayed()  # JSON: no schemas
    Select(browser.find_element(By.ID, "profile-payload")).select_by_value("PROTOBUF")
    schema = 'syntax = "proto3";\nmessage Reading {\n  optional double kwh = 1;\n}\n'
    wait(browser).until(EC.visibility_of_element_located((By.ID, "profile-deviceTelemetryProtoSchema"))).send_keys(schema)
    browser.find_element(By.ID, "create-profile").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "profiles-table"), name))
    profiles = rest(server.url, "GET", "/api/deviceProfiles?pageSize=1000")[1]["data"]
    (profile,) = [p for p in profiles if p["name"] == name]
    payload = profile["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"]
    assert payload["transportPayloadType"] == "PROTOBUF" and payload["deviceTelemetryProtoSchema"] == schema
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#profiles-table tbody tr") if name in r.text)
    assert "Protobuf" in row.text
    row.find_element(By.TAG_NAME, "summary").click()  # the schemas unfold
    wait(browser).until(lambda d: "message Reading" in row.text and "message RpcResponseMsg" in row.text)
    # a schema protoc refuses: the API's message with its line and column
    browser.find_element(By.ID, "profile-name").send_keys(f"bad-{name}")
    Select(browser.find_element(By.ID, "profile-payload")).select_by_value("PROTOBUF")
    browser.find_element(By.ID, "profile-deviceRpcRequestProtoSchema").send_keys('syntax = "proto3";\nmessage A {')
    browser.find_element(By.ID, "create-profile").click()
    wait(browser).until(lambda d: "deviceRpcRequestProtoSchema: 2:" in d.find_element(By.TAG_NAME, "body").text)
