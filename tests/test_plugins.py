"""The plugin system: entry points, store selection by scheme, auth chains, hook results."""

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.python import usage
from zope.interface.verify import verifyObject

from tbcoap.hookspecs import StoreBackend, hookimpl
from tbcoap.interfaces import IStore
from tbcoap.models import Device
from tbcoap.plugins import PluginManager
from tbcoap.service import Options, check_store
from tests.coapclient import POST, code_text


def test_bundled_store_comes_from_the_entry_point_group():
    described = {p["name"]: p for p in PluginManager().describe()}
    assert described["sqlite"]["source"] == "entrypoint:tbcoap"
    assert described["sqlite"]["hooks"] == ["tbcoap_store_backends"]
    assert described["tbcoap.builtins"]["hooks"] == ["tbcoap_authenticate"]


def test_without_entry_points_there_is_no_store():
    plugins = PluginManager(load_entry_points=False)
    with pytest.raises(usage.UsageError, match="unknown store scheme 'sqlite'"):
        check_store({"store": "sqlite:///tmp/x"}, plugins)


def test_unknown_scheme_names_the_available_ones():
    with pytest.raises(usage.UsageError, match=r"unknown store scheme 'nope' \(available: .*sqlite"):
        Options().parseOptions(["--store", "nope://x"])


class OtherScheme:
    """Offers the sqlite store under another scheme, as an outside store plugin would."""

    def __init__(self):
        self.urls = []

    @hookimpl
    def tbcoap_store_backends(self):
        def factory(url, settings):
            self.urls.append(url)
            sqlite = PluginManager().store_backends()["sqlite"]
            return sqlite.factory("sqlite://" + url.partition("://")[2], settings)

        return [StoreBackend("other", factory, "sqlite under another name")]


def test_store_backend_is_chosen_by_scheme(tmp_path):
    plugins = PluginManager()
    plugin = OtherScheme()
    plugins.register(plugin, name="other")
    backend = check_store({"store": f"other://{tmp_path}/x.sqlite3"}, plugins)
    store = backend.factory(f"other://{tmp_path}/x.sqlite3", {"data-dir": str(tmp_path)})
    assert plugin.urls == [f"other://{tmp_path}/x.sqlite3"]
    assert verifyObject(IStore, store)


class MagicAuth:
    """Accepts tokens starting with "magic-" as a fixed device, synchronously or later."""

    def __init__(self, device, delay=None):
        self.device, self.delay, self.asked = device, delay, []

    @hookimpl
    def tbcoap_authenticate(self, token, store):
        self.asked.append(token)
        answer = self.device if token.startswith("magic-") else None
        if self.delay is None:
            return answer
        from twisted.internet import reactor

        return task.deferLater(reactor, self.delay, lambda: answer)


@pytest.mark.parametrize("delay", [None, 0.05])
@pytest_twisted.ensureDeferred
async def test_auth_plugin_answers_before_the_builtin(node, coap, rest, delay):
    real, token = await node.core.devices.create("real", token="TOKEN-1")
    plugin = MagicAuth(real, delay)
    node.plugins.register(plugin, name="magic")
    assert code_text((await coap.request(POST, "/api/v1/magic-1/telemetry", b'{"m":1}')).code) == "2.01"
    # "not mine" (also when said asynchronously) falls through to the store lookup
    assert code_text((await coap.request(POST, "/api/v1/TOKEN-1/telemetry", b'{"t":1}')).code) == "2.01"
    assert code_text((await coap.request(POST, "/api/v1/other/telemetry", b'{"t":1}')).code) == "4.01"
    assert plugin.asked == ["magic-1", "TOKEN-1", "other"]
    latest = await node.core.telemetry.latest(real.id)
    assert {k: v for k, (_, v) in latest.items()} == {"m": 1, "t": 1}


@pytest_twisted.ensureDeferred
async def test_call_first_resolves_each_answer_before_asking_the_next():
    plugins = PluginManager(load_entry_points=False)
    order = []

    class Later:
        @hookimpl(tryfirst=True)
        def tbcoap_authenticate(self, token):
            order.append("later")
            return defer.succeed(None)

    class Now:
        @hookimpl
        def tbcoap_authenticate(self, token):
            order.append("now")
            return Device(id="x", name="n")

    plugins.register(Now(), name="now")
    plugins.register(Later(), name="later")
    device = await plugins.call_first("tbcoap_authenticate", token="t", store=None)
    assert device.id == "x" and order == ["later", "now"]
