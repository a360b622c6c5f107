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
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
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


def wait(driver, timeout=20):
    """Wait for a condition (the timeout is only an upper bound for a loaded machine). An element
    replaced by a re-render between two commands means "not yet", never a failure."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


def shot(driver, name, height=None, selector=None):
    """Save docs/images/console-<name>.png when TBCOAP_SCREENSHOTS=1: the viewport (``height``: a
    taller one, from the top), or only the element matching ``selector``."""
    if not SCREENSHOTS:
        return
    os.makedirs(os.path.join(ROOT, "docs", "images"), exist_ok=True)
    path = os.path.join(ROOT, "docs", "images", f"console-{name}.png")
    driver.execute_script("document.activeElement && document.activeElement.blur()")  # no focus ring
    if selector:  # tall enough for the whole element
        height = driver.execute_script(
            "return Math.ceil(document.querySelector(arguments[0]).getBoundingClientRect().height) + 40", selector)
    if height:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
        driver.execute_script("window.scrollTo(0, 0)")
    try:
        if selector:
            element = driver.find_element(By.CSS_SELECTOR, selector)
            driver.execute_script("arguments[0].scrollIntoView()", element)
            element.screenshot(path)
        else:
            driver.save_screenshot(path)
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


def text_of(driver, selector):
    """The visible text of the first element matching ``selector``, read in one command (so a
    re-render cannot replace it between finding and reading), or None."""
    return driver.execute_script("const el = document.querySelector(arguments[0]); return el ? el.innerText : null",
                                 selector)


def shows(selector, text):
    """Condition: the element matching ``selector`` shows ``text``."""
    return lambda driver: text in (text_of(driver, selector) or "")


def click(driver, find):
    """Click the element ``find(driver)`` answers, finding it again if a re-render replaced it."""
    def clicked(d):
        element = find(d)
        if element is None:
            return False
        element.click()
        return True
    wait(driver).until(clicked)


def css(selector):
    """A finder for ``click``: the first element matching ``selector``, or None."""
    return lambda driver: next(iter(driver.find_elements(By.CSS_SELECTOR, selector)), None)


def ready(driver, element_id):
    """Wait until the button is enabled again (a form's previous submit finished)."""
    wait(driver).until(EC.element_to_be_clickable((By.ID, element_id)))


def device_row(driver, name):
    """The device list's row whose link reads ``name`` exactly, or None."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#devices-table tbody tr')]"
        ".find(row => row.querySelector('a') && row.querySelector('a').textContent === arguments[0]) || null", name)


def row_text(driver, name):
    """The text of the device list's row of ``name`` (None if not listed), read in one command."""
    return driver.execute_script(
        "const row = [...document.querySelectorAll('#devices-table tbody tr')]"
        ".find(row => row.querySelector('a') && row.querySelector('a').textContent === arguments[0]);"
        "return row ? row.innerText : null", name)


def in_row(name, selector):
    """A finder for ``click``: the element matching ``selector`` in the device list's row of ``name``."""
    def find(driver):
        row = device_row(driver, name)
        return row.find_element(By.CSS_SELECTOR, selector) if row else None
    return find


def listed_names(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#devices-table tbody tr a')].map(a => a.textContent)")


def alert_text(driver):
    return text_of(driver, "#alerts")


def page_text(driver):
    """Everything the page shows below the header: top messages and the view."""
    return text_of(driver, "main")


def buttons_of(driver, selector):
    """The texts of the buttons in the element matching ``selector``."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' button')].map(b => b.textContent)", selector)


def gap_below(driver, above, below):
    """Pixels from the bottom of the element ``above`` to the top of ``below`` (CSS selectors)."""
    return driver.execute_script(
        "const a = document.querySelector(arguments[0]).getBoundingClientRect();"
        "const b = document.querySelector(arguments[1]).getBoundingClientRect();"
        "return b.top - a.bottom", above, below)


def make_device(server, prefix, **fields):
    """A device created over REST with a token of ours: (id, name, token)."""
    name, token = f"{prefix}-{uuid.uuid4().hex[:8]}", f"tok-{uuid.uuid4().hex[:16]}"
    status, device = rest(server.url, "POST", f"/api/device?accessToken={token}", {"name": name, **fields})
    assert status == 200, device
    return device["id"]["id"], name, token


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
    # told beside the form, as an alert
    wait(browser).until(shows("#sign-in-notice [role=alert]", "invalid key"))
    assert "401" in text_of(browser, "#sign-in-notice")
    assert 0 <= gap_below(browser, "#sign-in button[type=submit]", "#sign-in-notice .notice-error") < 40
    assert browser.execute_script("return sessionStorage.length") == 0

    field.clear()
    field.send_keys(ADMIN_KEY, Keys.ENTER)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "who-name"), "administrator"))
    stored = browser.execute_script("return Object.values(sessionStorage)")
    assert stored == [ADMIN_KEY]
    assert ADMIN_KEY not in browser.execute_script("return JSON.stringify(localStorage)")
    assert ADMIN_KEY not in browser.current_url
    assert browser.execute_script("return document.cookie") == ""
    assert alert_text(browser) == "" and "invalid key" not in page_text(browser)  # the failed attempt's message is gone

    browser.find_element(By.ID, "sign-out").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "api-key")))
    assert "Signed out" in text_of(browser, "#status")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert not browser.find_element(By.ID, "nav").is_displayed()


def test_create_device_then_its_token_works_over_coap(browser, server, coap_device):
    sign_in(browser, server)
    name = f"console-{uuid.uuid4().hex[:8]}"
    browser.find_element(By.ID, "new-device-type").send_keys("thermostat")
    browser.find_element(By.ID, "new-device-label").send_keys("Kitchen")
    browser.find_element(By.ID, "new-device-name").send_keys(name, Keys.ENTER)
    wait(browser).until(shows("#new-device-notice", f'Device "{name}" created'))
    wait(browser).until(lambda d: row_text(d, name))
    row = row_text(browser, name)
    assert "thermostat" in row and "Kitchen" in row and "Inactive" in row and "never" in row

    click(browser, in_row(name, "a"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), name))
    assert "created" not in page_text(browser)  # the list's message stayed on the list
    device_id = browser.current_url.rsplit("/", 1)[1]
    browser.find_element(By.ID, "show-token").click()
    token = wait(browser).until(EC.visibility_of_element_located((By.ID, "device-token"))).text
    assert rest(server.url, "GET", f"/api/device/{device_id}/credentials")[1]["credentialsId"] == token

    browser.execute_script("window.notReloaded = true")
    assert coap_device(token).post("telemetry", {"temperature": 21.5, "humidity": 40}) == "2.01"
    # the page's own refresh (every 5 s) shows the value, without a reload
    wait(browser, 30).until(shows("#latest-telemetry tr[data-key=temperature] td.value", "21.5"))
    assert text_of(browser, "#latest-telemetry tr[data-key=humidity] td.value") == "40"
    wait(browser, 30).until(shows("#device-state", "Active"))
    assert browser.execute_script("return window.notReloaded") is True

    # a new random token: the old one is refused at once, the new one works
    ready(browser, "rotate-token")
    browser.find_element(By.ID, "rotate-token").click()
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(lambda d: text_of(d, "#device-token") not in (None, "", token))
    wait(browser).until(shows("#credentials-notice", "new token"))
    new_token = text_of(browser, "#device-token")
    assert len(new_token) == 20 and "/" not in new_token
    assert coap_device(token).post("telemetry", {"temperature": 1}) == "4.01"
    assert coap_device(new_token).post("telemetry", {"temperature": 22}) == "2.01"

    browser.back()
    wait(browser).until(lambda d: row_text(d, name))
    row = row_text(browser, name)
    assert "Active" in row and "Inactive" not in row and "never" not in row
    assert "new token" not in page_text(browser)


def test_chart_draws_posted_points(browser, server, coap_device):
    device_id, name, token = make_device(server, "chart", type="thermostat")
    now = int(time.time() * 1000)
    points = [{"ts": now - k * 5 * 60000, "values": {"temperature": 20 + k, "humidity": 40 + k % 3}}
              for k in range(1, 12)]
    assert rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/timeseries/ANY", points)[0] == 200

    sign_in(browser, server)
    open_device(browser, device_id, name)
    # by default: the first numeric key ticked, the range the shortest holding its first point (55 min ago)
    wait(browser).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "11")
    assert browser.execute_script("return [...document.querySelectorAll('#chart-keys input:checked')]"
                                  ".map(box => box.value)") == ["humidity"]
    assert Select(browser.find_element(By.ID, "chart-range")).first_selected_option.text == "Last hour"
    summary = text_of(browser, "#chart-summary")
    assert "avg per 10 s bucket), last hour (chosen to fit the data)" in summary
    assert "humidity: 11 points, min 40, max 42" in summary
    size = browser.execute_script(
        "const c = document.querySelector('#chart canvas'); const r = c.getBoundingClientRect();"
        "return [c.width, c.height, r.width, r.height]")
    assert all(n > 0 for n in size), size
    assert browser.find_element(By.ID, "chart").get_attribute("data-points") == "11"

    click(browser, css("#chart-keys input[value=temperature]"))
    wait(browser).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "22")
    assert "temperature: 11 points, min 21, max 31, last 21" in text_of(browser, "#chart-summary")

    # a longer range picks longer buckets: five minutes for a day, still one point in each
    Select(browser.find_element(By.ID, "chart-range")).select_by_visible_text("Last day")
    wait(browser).until(shows("#chart-summary", "avg per 5 min bucket), last day:"))
    assert browser.find_element(By.ID, "chart-summary").get_attribute("data-points") == "22"

    Select(browser.find_element(By.ID, "chart-range")).select_by_visible_text("Last hour")
    wait(browser).until(shows("#chart-summary", "avg per 10 s bucket), last hour:"))

    # the device sends its current values: the chart's own refresh (every 10 s) draws them, and the
    # device is active with this telemetry (the page agrees with itself)
    assert coap_device(token).post("telemetry", {"temperature": 30, "humidity": 41}) == "2.01"
    wait(browser, 40).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "24")
    assert "temperature: 12 points, min 21, max 31, last 30" in text_of(browser, "#chart-summary")
    assert "humidity: 12 points, min 40, max 42, last 41" in text_of(browser, "#chart-summary")
    wait(browser, 30).until(shows("#device-state", "Active"))
    wait(browser).until(shows("#latest-telemetry tr[data-key=temperature] td.value", "30"))
    assert text_of(browser, "#device-last-activity") != "never"
    shot(browser, "device", height=1300)


def test_chart_defaults_for_a_new_device(browser, server, coap_device):
    """A device's first minute: its first numeric key is ticked as it appears, in a short range."""
    device_id, name, token = make_device(server, "fresh")
    sign_in(browser, server)
    open_device(browser, device_id, name)
    ranges = [o.text for o in Select(browser.find_element(By.ID, "chart-range")).options]
    assert ranges[:3] == ["Last 5 minutes", "Last 15 minutes", "Last hour"]
    wait(browser).until(shows("#chart-keys", "No time series yet."))
    assert Select(browser.find_element(By.ID, "chart-range")).first_selected_option.text == "Last 15 minutes"

    # keys sorted: alarm (boolean) and firmware (text) come first, temperature is the first numeric one
    assert coap_device(token).post("telemetry", {"alarm": False, "firmware": "v1.2", "temperature": 21.5}) == "2.01"
    wait(browser, 40).until(lambda d: d.find_element(By.ID, "chart-summary").get_attribute("data-points") == "1")
    assert browser.execute_script("return [...document.querySelectorAll('#chart-keys input')]"
                                  ".map(box => [box.value, box.checked])") == \
        [["alarm", False], ["firmware", False], ["temperature", True]]
    assert Select(browser.find_element(By.ID, "chart-range")).first_selected_option.text == "Last 5 minutes"
    summary = text_of(browser, "#chart-summary")
    assert "1 point (avg per 1 s bucket), last 5 minutes (chosen to fit the data)" in summary
    assert "temperature: 1 point, min 21.5, max 21.5, last 21.5" in summary

    # a range chosen by the user is kept: no longer "chosen to fit"
    Select(browser.find_element(By.ID, "chart-range")).select_by_visible_text("Last 15 minutes")
    wait(browser).until(shows("#chart-summary", "1 point (avg per 2 s bucket), last 15 minutes:"))
    # unticking the key leaves nothing ticked
    click(browser, css("#chart-keys input[value=temperature]"))
    wait(browser).until(shows("#chart-summary", "Choose one or more keys"))
    assert browser.find_element(By.ID, "chart").get_attribute("data-points") == "0"


def test_shared_attribute_edit_reaches_an_observing_device(browser, server, coap_device):
    device_id, name, token = make_device(server, "attrs")
    device = coap_device(token)
    assert device.post("attributes", {"fw": "v1.0"}) == "2.01"
    assert device.observe("attributes") == {}

    sign_in(browser, server)
    open_device(browser, device_id, name)
    wait(browser).until(shows("#attributes-CLIENT_SCOPE tr[data-key=fw] td.value", "v1.0"))
    assert not browser.find_elements(By.ID, "attr-CLIENT_SCOPE-key")  # read-only
    assert buttons_of(browser, "#attributes-CLIENT_SCOPE") == []
    assert "Written here" in text_of(browser, "#attr-SHARED_SCOPE-hint")

    browser.find_element(By.ID, "attr-SHARED_SCOPE-key").send_keys("target")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-value").send_keys("21.5", Keys.ENTER)
    assert device.notification(20) == {"target": 21.5}
    wait(browser).until(shows("#attr-SHARED_SCOPE-notice", 'Attribute "target" saved.'))
    wait(browser).until(shows("#attributes-SHARED_SCOPE tr[data-key=target] td.value", "21.5"))

    ready(browser, "attr-SHARED_SCOPE-save")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-key").send_keys("mode")
    Select(browser.find_element(By.ID, "attr-SHARED_SCOPE-type")).select_by_value("text")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-value").send_keys("eco", Keys.ENTER)
    assert device.notification(20) == {"mode": "eco"}
    wait(browser).until(shows("#attr-SHARED_SCOPE-notice", 'Attribute "mode" saved.'))

    # not JSON: refused beside its Save button (not in the alerts at the top), nothing sent
    ready(browser, "attr-SHARED_SCOPE-save")
    assert Select(browser.find_element(By.ID, "attr-SHARED_SCOPE-type")).first_selected_option.get_attribute("value") == "json"
    browser.find_element(By.ID, "attr-SHARED_SCOPE-key").send_keys("bad")
    browser.find_element(By.ID, "attr-SHARED_SCOPE-value").send_keys("{nope", Keys.ENTER)
    wait(browser).until(shows("#attr-SHARED_SCOPE-notice [role=alert]", "The value is not JSON"))
    assert 0 <= gap_below(browser, "#attr-SHARED_SCOPE-save", "#attr-SHARED_SCOPE-notice .notice-error") < 40
    assert alert_text(browser) == ""
    assert "saved" not in text_of(browser, "#attr-SHARED_SCOPE-notice")  # the new message replaced the old
    value = browser.find_element(By.ID, "attr-SHARED_SCOPE-value")
    assert value.get_attribute("aria-invalid") == "true" and browser.switch_to.active_element == value
    status, shared = rest(server.url, "GET", f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SHARED_SCOPE")
    assert sorted(a["key"] for a in shared) == ["mode", "target"]
    wait(browser).until(shows("#attributes-SERVER_SCOPE tr[data-key=lastActivityTime] th", "kept by the server"))
    shot(browser, "attributes", selector="section[aria-labelledby=attributes-h]")

    click(browser, css("#attributes-SHARED_SCOPE tr[data-key=mode] button.danger"))
    wait(browser).until(EC.alert_is_present()).accept()
    assert device.notification(20) == {"deleted": ["mode"]}
    wait(browser).until(shows("#attr-SHARED_SCOPE-notice", 'Attribute "mode" deleted.'))
    status, shared = rest(server.url, "GET", f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SHARED_SCOPE")
    assert [(a["key"], a["value"]) for a in shared] == [("target", 21.5)]

    # the messages belong to this page: gone on the next one, and when coming back
    go(browser, "#/devices")
    wait(browser).until(lambda d: d.find_element(By.ID, "devices-summary").text)
    assert "deleted" not in page_text(browser) and alert_text(browser) == ""
    browser.back()
    wait(browser).until(shows("#attributes-SHARED_SCOPE tr[data-key=target] td.value", "21.5"))
    assert text_of(browser, "#attr-SHARED_SCOPE-notice") == ""


def test_server_kept_attributes_have_no_edit_or_delete(browser, server, coap_device):
    device_id, name, token = make_device(server, "kept")
    assert coap_device(token).post("telemetry", {"t": 1}) == "2.01"  # active, with a last activity time
    assert rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/SERVER_SCOPE",
                {"provisionState": "provisioned", "room": "kitchen"})[0] == 200

    sign_in(browser, server)
    open_device(browser, device_id, name)
    table = "#attributes-SERVER_SCOPE"
    wait(browser).until(lambda d: all(text_of(d, f"{table} tr[data-key={key}]")
                                      for key in ("active", "lastActivityTime", "provisionState", "room")))
    for key in ("active", "lastActivityTime"):
        assert "kept by the server" in text_of(browser, f"{table} tr[data-key={key}] th")
        assert buttons_of(browser, f"{table} tr[data-key={key}]") == []
    assert "set by provisioning" in text_of(browser, f"{table} tr[data-key=provisionState] th")
    assert buttons_of(browser, f"{table} tr[data-key=provisionState]") == ["Delete"]  # lets it provision again
    assert "kept" not in text_of(browser, f"{table} tr[data-key=room] th")
    assert buttons_of(browser, f"{table} tr[data-key=room]") == ["Edit", "Delete"]
    assert "kept by the server" in text_of(browser, "#attr-SERVER_SCOPE-hint")

    # Edit fills the form with the attribute; Save writes it back changed
    click(browser, css(f"{table} tr[data-key=room] button:not(.danger)"))
    value = browser.find_element(By.ID, "attr-SERVER_SCOPE-value")
    assert browser.find_element(By.ID, "attr-SERVER_SCOPE-key").get_attribute("value") == "room"
    assert value.get_attribute("value") == "kitchen" and browser.switch_to.active_element == value
    value.clear()
    value.send_keys("hall", Keys.ENTER)
    wait(browser).until(shows(f"{table} tr[data-key=room] td.value", "hall"))

    click(browser, css(f"{table} tr[data-key=provisionState] button.danger"))
    dialog = wait(browser).until(EC.alert_is_present())
    assert "provision again" in dialog.text
    dialog.accept()
    wait(browser).until(shows("#attr-SERVER_SCOPE-notice", 'Attribute "provisionState" deleted.'))
    wait(browser).until(lambda d: text_of(d, f"{table} tr[data-key=provisionState]") is None)
    status, server_scope = rest(server.url, "GET",
                                f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SERVER_SCOPE")
    keys = {a["key"] for a in server_scope}  # (lastConnectTime once the server wrote the device's activity)
    assert {"active", "lastActivityTime", "room"} <= keys <= {"active", "lastActivityTime", "lastConnectTime", "room"}


def test_two_way_rpc_answered_by_the_device(browser, server, coap_device):
    device_id, name, token = make_device(server, "rpc")
    device = coap_device(token)
    assert device.observe("rpc") == {}

    sign_in(browser, server)
    open_device(browser, device_id, name)
    browser.find_element(By.ID, "rpc-params").send_keys('{"unit": "C"}')
    browser.find_element(By.ID, "rpc-method").send_keys("getTemp", Keys.ENTER)
    assert device.notification(20) == {"id": 1, "method": "getTemp", "params": {"unit": "C"}}
    assert device.post("rpc/1", {"temperature": 21.5}) == "2.01"
    reply = wait(browser, 30).until(EC.visibility_of_element_located((By.ID, "rpc-reply")))
    assert json.loads(reply.text) == {"temperature": 21.5}
    assert 0 <= gap_below(browser, "#rpc-send", "#rpc-result .notice-ok") < 40  # beside Send

    wait(browser).until(shows("#rpc-history tbody tr", "SUCCESSFUL"))
    row = text_of(browser, "#rpc-history tbody tr")
    assert "getTemp" in row and "two-way" in row
    assert json.loads(text_of(browser, "#rpc-history tbody tr .rpc-response")) == {"temperature": 21.5}

    # one-way with the params left empty: {} as the CLI sends, delivered once the device has it
    ready(browser, "rpc-send")
    browser.find_element(By.ID, "rpc-kind-oneway").click()
    browser.find_element(By.ID, "rpc-params").clear()
    method = browser.find_element(By.ID, "rpc-method")
    method.clear()
    method.send_keys("blink", Keys.ENTER)
    assert device.notification(20) == {"id": 2, "method": "blink", "params": {}}
    wait(browser).until(shows("#rpc-result", '"blink" was delivered'))
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rpc-history tbody tr")) == 2)
    wait(browser).until(shows("#rpc-history tbody tr", "one-way"))
    assert text_of(browser, "#rpc-history tbody tr .rpc-params") == "{}"

    # two-way without params: {} too
    ready(browser, "rpc-send")
    browser.find_element(By.ID, "rpc-kind-twoway").click()
    method.clear()
    method.send_keys("ping", Keys.ENTER)
    assert device.notification(20) == {"id": 3, "method": "ping", "params": {}}
    assert device.post("rpc/3", {"pong": True}) == "2.01"
    wait(browser, 30).until(shows("#rpc-reply", '"pong": true'))

    # params that are not JSON: refused beside Send, nothing sent
    ready(browser, "rpc-send")
    browser.find_element(By.ID, "rpc-params").send_keys("{nope")
    method.send_keys(Keys.ENTER)
    wait(browser).until(shows("#rpc-result [role=alert]", "The params are not JSON"))
    assert alert_text(browser) == ""
    assert browser.find_element(By.ID, "rpc-params").get_attribute("aria-invalid") == "true"
    status, history = rest(server.url, "GET", f"/api/rpc/persistent/device/{device_id}?pageSize=10&page=0")
    assert status == 200 and history["totalElements"] == 3


def test_customer_key_sees_only_its_devices(browser, server, coap_device):
    sign_in(browser, server)
    go(browser, "#/customers")
    title = f"acme-{uuid.uuid4().hex[:6]}"
    wait(browser).until(EC.element_to_be_clickable((By.ID, "customer-title"))).send_keys(title, Keys.ENTER)
    key = wait(browser).until(EC.visibility_of_element_located((By.ID, "new-customer-key"))).text
    assert len(key) == 48
    wait(browser).until(shows("#new-customer-notice", f'Customer "{title}" created.'))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "customers-table"), title))
    shot(browser, "customers")
    go(browser, "#/profiles")  # the success message does not follow to the next page
    wait(browser).until(lambda d: d.find_element(By.ID, "profiles-summary").text)
    assert "created" not in page_text(browser) and text_of(browser, "#status") == ""

    mine_id, mine, token = make_device(server, "mine")
    other_id, other, _ = make_device(server, "other")
    assert coap_device(token).post("claim", {"secretKey": "s3cret"}) == "2.01"
    rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{mine_id}/SHARED_SCOPE", {"target": 21})

    sign_in(browser, server, key)
    assert title in browser.find_element(By.ID, "who-name").text
    assert not browser.find_element(By.CSS_SELECTOR, "#nav a[href='#/customers']").is_displayed()
    assert listed_names(browser) == []
    browser.find_element(By.ID, "claim-name").send_keys(mine)
    browser.find_element(By.ID, "claim-secret").send_keys("s3cret", Keys.ENTER)
    wait(browser).until(lambda d: listed_names(d) == [mine])
    wait(browser).until(shows("#claim-notice", f'Device "{mine}" claimed.'))
    assert title in row_text(browser, mine)  # the owner
    assert not browser.find_elements(By.ID, "new-device-name")

    go(browser, f"#/device/{other_id}")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), "Device not found"))
    assert "not found" in alert_text(browser) and "404" in alert_text(browser)
    assert "claimed" not in page_text(browser)
    assert not browser.find_elements(By.ID, "latest-telemetry")

    open_device(browser, mine_id, mine)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-owner"), title))
    assert browser.find_elements(By.ID, "latest-telemetry") and browser.find_elements(By.ID, "chart-keys")
    for admin_only in ("show-token", "rpc-method", "rpc-history", "attr-SHARED_SCOPE-key", "attr-SERVER_SCOPE-key"):
        assert not browser.find_elements(By.ID, admin_only), admin_only
    # every scope read-only, and said so; the server's own attributes marked as such
    wait(browser).until(shows("#attributes-SHARED_SCOPE tr[data-key=target] td.value", "21"))
    wait(browser).until(shows("#attributes-SERVER_SCOPE tr[data-key=active] th", "kept by the server"))
    for scope in ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE"):
        hint = text_of(browser, f"#attr-{scope}-hint")
        assert "read-only" in hint and "Written here" not in hint, (scope, hint)
    assert buttons_of(browser, "section[aria-labelledby=attributes-h]") == []
    wait(browser).until(lambda d: text_of(d, "#latest-refreshed"))  # every call of the page made
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
    wait(browser).until(shows("#new-profile-notice", f'Device profile "{name}" created.'))
    profiles = rest(server.url, "GET", "/api/deviceProfiles?pageSize=1000")[1]["data"]
    assert [(p["provisionType"], p["provisionDeviceKey"]) for p in profiles if p["name"] == name] == \
        [("ALLOW_CREATE_NEW_DEVICES", f"key-{name}")]
    # a duplicate name: the API's message, beside the form
    ready(browser, "create-profile")
    browser.find_element(By.ID, "profile-name").send_keys(name, Keys.ENTER)
    wait(browser).until(shows("#new-profile-notice [role=alert]", "Creating the device profile"))
    assert "400" in text_of(browser, "#new-profile-notice") and "created" not in text_of(browser, "#new-profile-notice")
    assert 0 <= gap_below(browser, "#create-profile", "#new-profile-notice .notice-error") < 40
    assert alert_text(browser) == ""
    go(browser, "#/customers")
    wait(browser).until(lambda d: d.find_element(By.ID, "customers-summary").text)
    assert "Creating the device profile" not in page_text(browser)


def test_values_are_escaped(browser, server):
    status, device = rest(server.url, "POST", "/api/device", {"name": XSS_NAME, "label": "<b>bold</b>"})
    assert status == 200, device
    device_id = device["id"]["id"]
    rest(server.url, "POST", f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE", {"<i>k</i>": "<script>x</script>"})

    sign_in(browser, server)
    shot(browser, "devices")
    search(browser, "<img")
    wait(browser).until(lambda d: row_text(d, XSS_NAME))
    assert "<b>bold</b>" in row_text(browser, XSS_NAME)
    assert browser.execute_script("return document.querySelectorAll('img, b, i, #view script').length") == 0

    click(browser, in_row(XSS_NAME, "a"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "device-title"), XSS_NAME))
    assert browser.find_element(By.ID, "device-title").text == XSS_NAME
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "attributes-SHARED_SCOPE"), "<script>x</script>"))
    assert "<i>k</i>" in text_of(browser, "#attributes-SHARED_SCOPE")
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

    click(browser, in_row(name, "button.danger"))
    dialog = wait(browser).until(EC.alert_is_present())
    assert name in dialog.text
    dialog.dismiss()  # cancelled: nothing happens
    assert rest(server.url, "GET", f"/api/device/{device_id}")[0] == 200

    click(browser, in_row(name, "button.danger"))
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(lambda d: device_row(d, name) is None)
    assert listed_names(browser) == []
    wait(browser).until(shows("#devices-notice", f'Device "{name}" deleted.'))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[0] == 404

    # deleted from its own page: the device list, where the page goes next, says so once
    device_id, name, _ = make_device(server, "doomed")
    open_device(browser, device_id, name)
    ready(browser, "delete-device")
    browser.find_element(By.ID, "delete-device").click()
    wait(browser).until(EC.alert_is_present()).accept()
    wait(browser).until(lambda d: d.current_url.endswith("#/devices"))
    wait(browser).until(shows("#status", f'Device "{name}" deleted.'))
    assert rest(server.url, "GET", f"/api/device/{device_id}")[0] == 404
    go(browser, "#/customers")
    wait(browser).until(lambda d: d.find_element(By.ID, "customers-summary").text)
    assert text_of(browser, "#status") == ""

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


def test_power_mode_on_the_device_list_and_page(browser, server):
    """A device's power mode shows in the list and on its page, where the admin sets it."""
    status, _ = rest(server.url, "POST", "/api/deviceProfile", {
        "name": "nb-iot-sleepers", "transportType": "COAP", "profileData": {"transportConfiguration": {
            "type": "COAP", "clientSettings": {"powerMode": "PSM", "psmActivityTimer": 30000}}}})
    assert status == 200
    device_id, name, _ = make_device(server, "sleeper", type="nb-iot-sleepers")
    sign_in(browser, server)
    search(browser, name)
    wait(browser).until(shows(f"#devices-table tr[data-device-id='{device_id}'] td.power", "PSM"))
    open_device(browser, device_id, name)
    wait(browser).until(shows("#device-power", "PSM (activity timer 30000 ms), from profile nb-iot-sleepers"))
    Select(browser.find_element(By.ID, "power-mode")).select_by_visible_text("E_DRX")
    browser.find_element(By.ID, "power-pagingTransmissionWindow").send_keys("4000")
    browser.find_element(By.ID, "power-save").click()
    wait(browser).until(shows("#power-notice", "Power mode saved: E_DRX (paging window 4000 ms)"))
    status, device = rest(server.url, "GET", f"/api/device/{device_id}")
    assert device["deviceData"]["transportConfiguration"] == {"type": "COAP", "powerMode": "E_DRX",
                                                              "pagingTransmissionWindow": 4000}
    go(browser, "#/devices")
    search(browser, name)
    wait(browser).until(shows(f"#devices-table tr[data-device-id='{device_id}'] td.power", "E_DRX"))
