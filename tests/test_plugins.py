"""The plugin system: entry points, store selection by scheme, auth chains, hook results."""

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.python import usage
from zope.interface.verify import verifyObject

import tbcoap
from tbcoap.hookspecs import Setting, StoreBackend, hookimpl
from tbcoap.interfaces import IStore
from tbcoap.models import Device
from tbcoap.pluginconfig import SettingError
from tbcoap.plugins import PluginManager
from tbcoap.choices import ChoiceError, store_backend
from tbcoap.node import NodeError, TbcoapService
from tbcoap.service import Options, resolve_settings
from tests.coapclient import POST, code_text


def test_bundled_store_comes_from_the_entry_point_group():
    described = {p["name"]: p for p in PluginManager().describe()}
    assert described["sqlite"]["source"] == "entrypoint:tbcoap"
    assert described["sqlite"]["hooks"] == ["tbcoap_plugin_settings", "tbcoap_store_backends"]  # sync, path
    assert described["tbcoap.builtins"]["hooks"] == ["tbcoap_authenticate"]


def test_without_entry_points_there_is_no_store():
    plugins = PluginManager(load_entry_points=False)
    with pytest.raises(ChoiceError, match="unknown store scheme 'sqlite'"):
        store_backend("sqlite:///tmp/x", plugins)


def test_a_node_built_from_settings_refuses_a_bad_choice_with_its_own_error(tmp_path):
    """An embedding application that builds the node from a settings dict gets NodeError (not
    twistd's UsageError), naming the option."""
    settings = resolve_settings({"data-dir": str(tmp_path), "rules": "nosuchrule"})
    with pytest.raises(NodeError, match="--rules: unknown rule nosuchrule"):
        TbcoapService(settings, PluginManager())
    settings = resolve_settings({"data-dir": str(tmp_path), "store": "nope://x"})
    with pytest.raises(NodeError, match="unknown store scheme 'nope'"):
        TbcoapService(settings, PluginManager())


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


def test_hook_store_backends(tmp_path):
    """tbcoap_store_backends: the store is chosen by the scheme of --store."""
    plugins = PluginManager()
    plugin = OtherScheme()
    plugins.register(plugin, name="other")
    backend = store_backend(f"other://{tmp_path}/x.sqlite3", plugins)
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
async def test_hook_authenticate(node, coap, rest, delay):
    """tbcoap_authenticate: an auth plugin answers before the built-in token lookup."""
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


# -- settings, lifecycle, stats and which plugins are active ----------------------

class Configurable:
    """A plugin with settings of every type, a lifecycle and counters, as a third party writes one."""

    name = "configurable"

    def __init__(self, fail_start=False):
        self.started, self.stopped, self.fail_start = [], 0, fail_start

    @hookimpl
    def tbcoap_plugin_settings(self):
        def positive(value):
            if value <= 0:
                raise ValueError("batch must be positive")

        return [Setting("url", str, required=True, help="where to"),
                Setting("batch", int, 10, check=positive),
                Setting("wait", float, 0.5),
                Setting("verbose", bool, False)]

    @hookimpl
    def tbcoap_startup(self, config):
        if self.fail_start:
            raise ValueError("cannot reach the collector")
        self.started.append(config)

    @hookimpl
    def tbcoap_shutdown(self):
        self.stopped += 1

    @hookimpl
    def tbcoap_stats(self):
        return {"sent": 3}


def configured(*args, plugin=None):
    options = Options([plugin or Configurable()])
    options.parseOptions(["--data-dir", "/tmp/unused-tbcoap-data", *args])
    return options


def test_hook_plugin_settings():
    """tbcoap_plugin_settings: settings from the command line, typed as declared."""
    options = configured("--plugin-option", "configurable.url=http://x/y", "--plugin-option", "configurable.batch=5",
                         "--plugin-option", "configurable.wait=2", "--plugin-option", "configurable.verbose=yes")
    assert options.plugins.config_for("configurable") == {"url": "http://x/y", "batch": 5, "wait": 2.0,
                                                          "verbose": True}
    assert options.settings["plugins"]["configurable"]["batch"] == 5  # what a store factory sees


def test_settings_from_the_config_file_and_the_command_line_wins(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[plugins.configurable]\nurl = "http://file"\nbatch = 7\nwait = 1\nverbose = true\n')
    options = configured("--config", str(config), "--plugin-option", "configurable.url=http://cli")
    assert options.plugins.config_for("configurable") == {"url": "http://cli", "batch": 7, "wait": 1.0,
                                                          "verbose": True}


@pytest.mark.parametrize("args, words", [
    (["--plugin-option", "configurable.batch=x"], ["--plugin-option configurable.batch", "an integer", "'x'"]),
    (["--plugin-option", "configurable.batch=0"], ["configurable.batch", "batch must be positive"]),
    (["--plugin-option", "configurable.verbose=maybe"], ["configurable.verbose", "true or false"]),
    (["--plugin-option", "configurable.wait=soon"], ["configurable.wait", "a number"]),
    (["--plugin-option", "configurable.colour=red"], ["configurable", "'colour'", "it takes: batch, url, verbose, wait"]),
    ([], ["configurable", "needs the setting 'url'"]),
])
def test_bad_settings_name_the_plugin_and_the_key(args, words):
    url = ["--plugin-option", "configurable.url=u"] if words[-1] != "needs the setting 'url'" else []
    with pytest.raises(usage.UsageError) as caught:
        configured(*url, *args)
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_config_file_values_must_have_the_type(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[plugins.configurable]\nurl = "u"\nbatch = "7"\n')
    with pytest.raises(usage.UsageError, match=r"\[plugins.configurable\] batch: plugin configurable expects an integer"):
        configured("--config", str(config))


def test_a_required_setting_is_needed_only_by_an_active_plugin():
    class StoreWithSettings(OtherScheme):
        @hookimpl
        def tbcoap_plugin_settings(self):
            return [Setting("password", str, required=True)]

    plugins = PluginManager()
    plugins.register(StoreWithSettings(), name="other")
    plugins.configure("sqlite", [], {})  # "other" is not the store in use: its password may be missing
    assert not plugins.is_active("other") and plugins.config_for("other") == {"password": None}
    with pytest.raises(SettingError, match="plugin other needs the setting 'password'"):
        plugins.configure("other", [], {})
    assert plugins.is_active("sqlite")  # a failed configure changes nothing


def test_active_plugins_and_the_log_line():
    options = configured("--plugin-option", "configurable.url=u")
    described = {p["name"]: p for p in options.plugins.describe()}
    assert described["sqlite"]["active"] and described["echo"]["active"]  # the store and the default rule
    assert described["tbcoap.builtins"]["active"]                           # auth: always
    assert described["configurable"]["active"]                              # no role: always
    options = configured("--plugin-option", "configurable.url=u", "--rules", "none")
    assert not {p["name"]: p for p in options.plugins.describe()}["echo"]["active"]


@pytest_twisted.ensureDeferred
async def test_hook_startup(start_node):
    """tbcoap_startup: an active plugin starts with its validated settings."""
    plugin = Configurable()
    node = await start_node("--plugin-option", "configurable.url=http://x", plugins=[plugin])
    assert plugin.started == [{"url": "http://x", "batch": 10, "wait": 0.5, "verbose": False}]
    assert node.in_use() == (f"tbcoap {tbcoap.__version__} using store sqlite (plugin sqlite), rules echo, "
                             "auth tbcoap.builtins")


@pytest_twisted.ensureDeferred
async def test_hook_stats(start_node):
    """tbcoap_stats: an active plugin's counters under plugins.NAME."""
    node = await start_node("--plugin-option", "configurable.url=http://x", plugins=[Configurable()])
    assert node.stats()["plugins"] == {"configurable": {"sent": 3}}


@pytest_twisted.ensureDeferred
async def test_hook_shutdown(start_node):
    """tbcoap_shutdown: called once when the node stops."""
    plugin = Configurable()
    node = await start_node("--plugin-option", "configurable.url=http://x", plugins=[plugin])
    assert plugin.stopped == 0
    await node.stopService()
    assert plugin.stopped == 1


@pytest_twisted.ensureDeferred
async def test_a_plugin_that_cannot_start_leaves_the_node_unavailable(start_node):
    node = await start_node("--plugin-option", "configurable.url=http://x", plugins=[Configurable(fail_start=True)])
    assert not node.core.ready  # embedded: it answers 5.03 until stopped (twistd exits with status 1)


class Shy:
    """A rule that is installed but not named in --rules: none of its hooks is called."""

    name = "shy"

    def __init__(self):
        self.calls = []

    @hookimpl
    def tbcoap_client_rpc(self, request):
        self.calls.append("rpc")

    @hookimpl
    def tbcoap_startup(self):
        self.calls.append("startup")

    @hookimpl
    def tbcoap_stats(self):
        self.calls.append("stats")
        return {}


@pytest_twisted.ensureDeferred
async def test_an_inactive_plugin_is_not_started(start_node):
    shy = Shy()
    node = await start_node(plugins=[shy])
    assert "shy" not in node.stats()["plugins"]
    assert shy.calls == []
    assert {p["name"]: p["active"] for p in node.plugins.describe()}["shy"] is False


def test_a_plugin_registered_in_code_replaces_the_installed_one_of_that_name():
    class MyEcho:
        name = "echo"

        @hookimpl
        def tbcoap_client_rpc(self, request):
            return {"mine": True}

    options = Options([MyEcho()])
    options.parseOptions(["--data-dir", "/tmp/unused-tbcoap-data"])
    echo = {p["name"]: p for p in options.plugins.describe()}["echo"]
    assert echo["source"] == "code" and echo["hooks"] == ["tbcoap_client_rpc"]


def test_a_secret_setting_is_never_repeated_in_an_error():
    from tbcoap.pluginconfig import collect, validate

    declared = [Setting("pin", int, secret=True), Setting("count", int)]
    for key in ("pin", "count"):
        given = collect(None, [f"vault.{key}=s3cr3t-value"])["vault"]
        with pytest.raises(SettingError) as caught:
            validate("vault", declared, given, active=True)
        assert f"--plugin-option vault.{key}: plugin vault expects an integer" in str(caught.value)
        assert ("s3cr3t-value" in str(caught.value)) is (key == "count")
