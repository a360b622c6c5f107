"""Settings from options and the config file, checks, and when the plugin is active."""

import importlib.metadata

import pytest
import pytest_twisted
from twisted.python import usage

import tbcoap
from tbcoap_webhook import WebhookPlugin

URL = "http://127.0.0.1:9/ingest"


@pytest.mark.parametrize("options, key", [
    ([], "url"),  # required once the plugin is in --rules
    (["webhook.url=ftp://127.0.0.1/x"], "url"),
    (["webhook.url=http://"], "url"),
    (["webhook.url=http://h:99999/"], "url"),
    ([f"webhook.url={URL}", "webhook.batch-size=0"], "batch-size"),
    ([f"webhook.url={URL}", "webhook.batch-size=many"], "batch-size"),
    ([f"webhook.url={URL}", "webhook.batch-wait=0"], "batch-wait"),
    ([f"webhook.url={URL}", "webhook.queue-size=0"], "queue-size"),
    ([f"webhook.url={URL}", "webhook.retries=-1"], "retries"),
    ([f"webhook.url={URL}", "webhook.backoff=0"], "backoff"),
    ([f"webhook.url={URL}", "webhook.timeout=-1"], "timeout"),
    ([f"webhook.url={URL}", "webhook.shutdown-flush=11"], "shutdown-flush"),
    ([f"webhook.url={URL}", "webhook.header=Authorization s3cret"], "header"),
    ([f"webhook.url={URL}", "webhook.header=Bad Name: s3cret"], "header"),
    ([f"webhook.url={URL}", "webhook.header=X-Key:"], "header"),
    ([f"webhook.url={URL}", "webhook.header=X-Key: s3cret\r\nX-Other: 1"], "header"),
    ([f"webhook.url={URL}", "webhook.header=Content-Length: 5"], "header"),
    ([f"webhook.url={URL}", "webhook.colour=red"], "colour"),
])
def test_bad_settings_stop_the_start(webhook_args, options, key):
    with pytest.raises(usage.UsageError) as raised:
        tbcoap.make_service(webhook_args(*options), plugins=[WebhookPlugin()])
    message = str(raised.value)
    assert "webhook" in message and key in message and "s3cret" not in message


def test_bad_settings_in_the_config_file(webhook_args, tmp_path):
    config = tmp_path / "tbcoap.toml"
    config.write_text(f'[plugins.webhook]\nurl = "{URL}"\nbatch-size = 0\n')
    with pytest.raises(usage.UsageError, match=r"\[plugins.webhook\] batch-size: batch-size must be at least 1"):
        tbcoap.make_service(webhook_args() + ["--config", str(config)], plugins=[WebhookPlugin()])


@pytest_twisted.ensureDeferred
async def test_settings_from_the_config_file_with_defaults(webhook_args, tmp_path):
    config = tmp_path / "tbcoap.toml"
    config.write_text(f'[plugins.webhook]\nurl = "{URL}"\nbatch-size = 7\nbackoff = 2\n'
                      f'header = "Authorization: Bearer x"\n')
    plugin = WebhookPlugin()
    service = tbcoap.make_service(webhook_args() + ["--config", str(config)], plugins=[plugin])
    service.startService()
    await service.opened
    await service.stopService()
    assert plugin.config == {"url": URL, "batch-size": 7, "batch-wait": 1.0, "queue-size": 10000, "retries": 5,
                             "backoff": 2.0, "timeout": 10.0, "shutdown-flush": 5.0,
                             "header": "Authorization: Bearer x"}


def test_active_when_named_in_rules(webhook_args):
    service = tbcoap.make_service(webhook_args(url=URL), plugins=[WebhookPlugin()])
    (entry,) = [p for p in service.plugins.describe() if p["name"] == "webhook"]
    assert entry["active"] and entry["source"] == "code"
    assert {"tbcoap_telemetry_uploaded", "tbcoap_attributes_uploaded", "tbcoap_stats"} <= set(entry["hooks"])


@pytest_twisted.ensureDeferred
async def test_not_active_nor_started_when_not_in_rules(webhook_node, webhook_server, webhook_tools):
    node = await webhook_node(rules="echo", url="")  # no url needed: the plugin is not used
    (entry,) = [p for p in node.service.plugins.describe() if p["name"] == "webhook"]
    assert not entry["active"]
    assert webhook_tools.code_text(await node.client.post("api/v1/TOKEN-1/telemetry", {"t": 1})) == "2.01"
    await webhook_tools.sleep(0.2)
    assert node.plugin.forwarder is None and node.plugin.config is None
    assert webhook_server.ingest.posts == [] and "webhook" not in node.service.stats()["plugins"]


def test_the_installed_entry_point(webhook_args):
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="tbcoap") if ep.name == "webhook"]
    assert entry.value == "tbcoap_webhook:plugin" and isinstance(entry.load(), WebhookPlugin)
    service = tbcoap.make_service(webhook_args(url=URL))
    (described,) = [p for p in service.plugins.describe() if p["name"] == "webhook"]
    assert described["source"] == "entrypoint:tbcoap-webhook" and described["active"]
