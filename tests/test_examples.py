"""The examples in examples/ work as their comments say."""

import importlib.util
import pathlib

import pytest_twisted

from tbcoap.service import Options
from tests.coapclient import POST, code_text, open_client

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def test_example_config_file_is_valid():
    options = Options()
    options.parseOptions(["--config", str(EXAMPLES / "tbcoap.toml"), "--coap-port", "0"])
    assert options.settings["coap-port"] == 0  # the command line wins
    assert options.settings["device-rate-limit"] == "100:1,3000:60"


@pytest_twisted.ensureDeferred
async def test_embedding_example_rule_answers_client_rpc(start_node):
    spec = importlib.util.spec_from_file_location("embed_example", EXAMPLES / "embed.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    node = await start_node("--rules", "clock,echo", plugins=[example.ClockRule()])
    await node.core.devices.create("thermostat", token="TOKEN-1")
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    answer = await client.request(POST, "/api/v1/TOKEN-1/rpc", b'{"method":"getTime"}')
    assert code_text(answer.code) == "2.05" and b'"device":"thermostat"' in answer.payload
    echoed = await client.request(POST, "/api/v1/TOKEN-1/rpc", b'{"method":"other"}')
    assert echoed.payload == b'{"method":"other"}'
    await client.port.stopListening()


def test_thingsboard_client_script_runs_unchanged(server):
    """examples/thingsboard_client.py: tb-rest-client and an aiocoap device, every step ok."""
    import subprocess
    import sys

    from tests.conftest import ADMIN_KEY, require

    require(importlib.util.find_spec("tb_rest_client") is not None, "tb-rest-client is not installed",
            "pip install tb-rest-client")
    done = subprocess.run([sys.executable, str(EXAMPLES / "thingsboard_client.py"), "--url", server.http_url,
                           "--key", ADMIN_KEY, "--coap", f"coap://127.0.0.1:{server.coap_port}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 9 and all(line.startswith("ok ") for line in lines), done.stdout


def test_live_telemetry_script_prints_a_coap_post_within_a_second(server):
    """examples/live_telemetry.py: ThingsBoard's WebSocket commands, the current value, then a
    device's CoAP post within a second of its 2.01."""
    import selectors
    import subprocess
    import sys
    import time

    from tests.blocking import Coap, rest
    from tests.conftest import ADMIN_KEY

    status, device = rest(server.http_url, "POST", "/api/device?accessToken=LIVE-EXAMPLE", {"name": "live-example"})
    assert status == 200, device
    coap = Coap(server.coap_address)
    assert coap.request(2, "/api/v1/LIVE-EXAMPLE/telemetry", b'{"temperature":20.5}') == 65
    script = subprocess.Popen([sys.executable, str(EXAMPLES / "live_telemetry.py"), "--url", server.http_url,
                               "--key", ADMIN_KEY, "--device", device["id"]["id"], "--keys", "temperature",
                               "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        watch = selectors.DefaultSelector()
        watch.register(script.stdout, selectors.EVENT_READ)

        def next_line(timeout):
            assert watch.select(timeout), "no update in time"
            return script.stdout.readline().split()

        assert next_line(30)[::2] == ["temperature", "20.5"]  # the current value first
        assert coap.request(2, "/api/v1/LIVE-EXAMPLE/telemetry", b'{"temperature":21.5}') == 65
        posted = time.monotonic()
        key, ts, value = next_line(5)
        assert (key, value) == ("temperature", "21.5") and time.monotonic() - posted < 1.0
        assert script.wait(10) == 0, script.stderr.read()
    finally:
        script.kill()
        coap.close()
