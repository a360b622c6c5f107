"""``tbcoap rpc``: the command line against a real ``twistd -n tbcoap``, with a device played
over a plain UDP socket (requests encoded by tests.coapclient, answers decoded by txThings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from txthings import coap as tx

from tbcoap.cli.commands.rpc import http_timeout, json_or_string, request_body
from tbcoap.cli.main import build_parser
from tests.blocking import UdpDevice
from tests.conftest import ADMIN_KEY
from tests.coapclient import CON, GET, POST, build, code_text


def command(server, *args):
    environment = {k: v for k, v in os.environ.items() if k != "TBCOAP_ADMIN_KEY"}
    return [sys.executable, "-m", "tbcoap.cli", "--url", server.url, "--key", ADMIN_KEY, *args], environment


def tbcoap(server, *args, timeout=60):
    """Run the CLI to the end; the CompletedProcess."""
    argv, environment = command(server, *args)
    return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=timeout)


def background(server, *args):
    """Start the CLI without waiting (for a send that waits on the device)."""
    argv, environment = command(server, *args)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def finish(proc, timeout=30):
    """Wait for a background CLI; (returncode, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the CLI did not finish: {out!r} {err!r}")
    return proc.returncode, out, err


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def make_device(server):
    """A new device (so its RPC ids start at 1); (name, id, token)."""
    name, token = f"rpc-{uuid.uuid4().hex[:8]}", f"tok-{uuid.uuid4().hex[:12]}"
    device = json.loads(ok(tbcoap(server, "--json", "device", "create", name, "--token", token)))
    return name, device["id"]["id"], token


class Device(UdpDevice):
    """The device's side over a blocking UDP socket."""

    def __init__(self, server, token):
        super().__init__(server.coap_address, token)

    def request(self, method, path, payload=b"", **options):
        """A CON request; its response (piggybacked, or separate and then ACKed)."""
        mid, token = self.next_mid(), os.urandom(4)
        self.send(build(method, path, payload, mtype=CON, mid=mid, token=token, **options))
        answer = self.receive(lambda m: m.token == token and m.code != tx.EMPTY)
        self.ack(answer)
        return answer

    def observe_rpc(self):
        """Register an observation of /rpc; its token."""
        token = os.urandom(4)
        self.send(build(GET, f"/api/v1/{self.token}/rpc", observe=0, mid=self.next_mid(), token=token))
        first = self.receive(lambda m: m.token == token and m.payload == b"{}")
        assert code_text(first.code) == "2.05", code_text(first.code)
        self.ack(first)
        self.observation = token
        return token

    def notification(self, timeout=10.0):
        """The next RPC notification (a CON on the observation's token): its message and JSON."""
        message = self.receive(lambda m: m.token == self.observation and m.payload != b"{}", timeout)
        assert code_text(message.code) == "2.05"
        return message, json.loads(message.payload)

    def reply(self, request_id, body):
        answer = self.request(POST, f"/api/v1/{self.token}/rpc/{request_id}", json.dumps(body).encode())
        assert code_text(answer.code) == "2.01", code_text(answer.code)


@pytest.fixture
def device(server):
    name, device_id, token = make_device(server)
    coap = Device(server, token)
    coap.name, coap.id = name, device_id
    yield coap
    coap.close()


def rpc_status(server, rpc_id):
    return json.loads(ok(tbcoap(server, "--json", "rpc", "status", rpc_id)))


def wait_for_status(server, rpc_id, wanted, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        rpc = rpc_status(server, rpc_id)
        if rpc["status"] == wanted or time.monotonic() > deadline:
            assert rpc["status"] == wanted, rpc
            return rpc
        time.sleep(0.1)


# -- send ------------------------------------------------------------------------

def test_twoway_prints_the_device_reply(server, device):
    device.observe_rpc()
    proc = background(server, "rpc", "send", device.name, "setGpio", '{"pin":1}')
    try:
        message, body = device.notification()
        assert message.mtype == CON
        assert body == {"id": 1, "method": "setGpio", "params": {"pin": 1}}
        device.ack(message)
        device.reply(1, {"ok": True})
    finally:
        code, out, err = finish(proc)
    assert code == 0, (out, err)
    assert json.loads(out) == {"ok": True}
    assert out == json.dumps({"ok": True}, indent=2) + "\n"


def test_twoway_by_id_with_json_prints_the_body_as_is(server, device):
    device.observe_rpc()
    proc = background(server, "--json", "rpc", "send", device.id, "getState", "--rpc-timeout", "20000")
    try:
        message, body = device.notification()
        assert body == {"id": 1, "method": "getState", "params": {}}
        device.ack(message)
        device.reply(1, {"state": "on", "level": [1, 2]})
    finally:
        code, out, err = finish(proc)
    assert code == 0, (out, err)
    assert out == '{"state":"on","level":[1,2]}\n'


def test_oneway_prints_delivered_and_params_may_be_a_string(server, device):
    device.observe_rpc()
    proc = background(server, "rpc", "send", device.name, "blink", "fast", "--oneway")
    try:
        message, body = device.notification()
        assert body == {"id": 1, "method": "blink", "params": "fast"}
        device.ack(message)
    finally:
        code, out, err = finish(proc)
    assert (code, out) == (0, "delivered\n"), err
    rpcs = json.loads(ok(tbcoap(server, "--json", "rpc", "list", device.name)))["data"]
    assert [(r["request"]["method"], r["request"]["oneway"], r["status"]) for r in rpcs] == \
        [("blink", True, "SUCCESSFUL")]


def test_persistent_rpc_status_list_and_delete(server, device):
    out = ok(tbcoap(server, "rpc", "send", device.name, "reboot", '{"delay":3}', "--persistent",
                    "--rpc-timeout", "60000"))
    rpc_id = out.strip()
    assert str(uuid.UUID(rpc_id)) == rpc_id

    shown = ok(tbcoap(server, "rpc", "status", rpc_id))
    lines = dict(line.split(":", 1) for line in shown.splitlines())
    lines = {k: v.strip() for k, v in lines.items()}
    assert lines["id"] == rpc_id and lines["device"] == device.id
    assert lines["request id"] == "1" and lines["method"] == "reboot" and lines["params"] == '{"delay":3}'
    assert lines["status"] == "QUEUED" and lines["response"] == "-"
    assert lines["created"].endswith("Z") and lines["expiration"].endswith("Z")
    assert lines["created"] < lines["expiration"]

    raw = rpc_status(server, rpc_id)
    assert raw["id"]["id"] == rpc_id and raw["status"] == "QUEUED" and "response" not in raw
    assert raw["request"]["params"] == {"delay": 3} and raw["persistent"] is True

    device.observe_rpc()   # the queued RPC goes out once the device observes
    message, body = device.notification()
    assert body == {"id": 1, "method": "reboot", "params": {"delay": 3}}
    device.ack(message)
    wait_for_status(server, rpc_id, "DELIVERED")
    device.reply(1, {"rebooting": True})
    raw = wait_for_status(server, rpc_id, "SUCCESSFUL")
    assert raw["response"] == {"rebooting": True}
    shown = ok(tbcoap(server, "rpc", "status", rpc_id))
    assert "SUCCESSFUL" in shown and '{"rebooting":true}' in shown

    second = ok(tbcoap(server, "rpc", "send", device.id, "ping", "--persistent", "--rpc-timeout", "60000")).strip()
    listed = ok(tbcoap(server, "rpc", "list", device.name))
    header, *rows = listed.splitlines()
    assert header.split() == ["ID", "REQUEST", "METHOD", "STATUS", "CREATED", "EXPIRATION"]
    assert [row.split()[:3] for row in rows] == [[second, "2", "ping"], [rpc_id, "1", "reboot"]]
    assert rows[0].split()[3] in ("QUEUED", "SENT") and rows[1].split()[3] == "SUCCESSFUL"
    page = json.loads(ok(tbcoap(server, "--json", "rpc", "list", device.name, "--page-size", "1", "--page", "1")))
    assert [r["id"]["id"] for r in page["data"]] == [rpc_id]
    assert page["totalElements"] == 2 and page["hasNext"] is False
    paged = ok(tbcoap(server, "rpc", "list", device.name, "--page-size", "1"))
    assert second in paged and rpc_id not in paged and "page 1 of 2 (--page 0), 2 RPCs in all; next: --page 1" in paged

    assert ok(tbcoap(server, "rpc", "delete", rpc_id)) == f"deleted rpc {rpc_id}\n"
    result = tbcoap(server, "rpc", "status", rpc_id)
    assert result.returncode == 1 and result.stderr.startswith("tbcoap: 404 ")
    assert [r["id"]["id"] for r in json.loads(ok(tbcoap(server, "--json", "rpc", "list", device.id)))["data"]] \
        == [second]


def test_list_of_a_device_without_rpcs(server, device):
    assert ok(tbcoap(server, "rpc", "list", device.name)) == "no RPCs on this page\n"


def test_twoway_to_a_device_not_observing_ends_with_504(server, device):
    started = time.monotonic()
    result = tbcoap(server, "rpc", "send", device.name, "setGpio", '{"pin":2}', "--rpc-timeout", "5000")
    took = time.monotonic() - started
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("tbcoap: 504 "), result.stderr
    assert 4 < took < 20
    rpcs = json.loads(ok(tbcoap(server, "--json", "rpc", "list", device.name)))["data"]
    assert [r["status"] for r in rpcs] == ["EXPIRED"]


# -- errors ------------------------------------------------------------------------

def test_unknown_rpc_id_is_404(server):
    unknown = str(uuid.uuid4())
    for args in (("rpc", "status", unknown), ("rpc", "delete", unknown)):
        result = tbcoap(server, *args)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("tbcoap: 404 "), result.stderr


def test_unknown_device_is_404(server):
    result = tbcoap(server, "rpc", "send", "no-such-device", "m")
    assert result.returncode == 1 and result.stderr.startswith("tbcoap: 404 "), result.stderr


def test_bad_rpc_timeout_is_a_usage_error(server):
    result = tbcoap(server, "rpc", "send", "dev", "m", "--rpc-timeout", "0")
    assert result.returncode == 2 and "--rpc-timeout" in result.stderr


# -- arguments, in process ---------------------------------------------------------------

def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_params_are_json_if_they_parse_else_a_string():
    assert json_or_string('{"a":[1,2]}') == {"a": [1, 2]}
    assert json_or_string("5") == 5 and json_or_string("true") is True and json_or_string("null") is None
    assert json_or_string("hello") == "hello" and json_or_string("NaN") == "NaN"
    assert json_or_string('"quoted"') == "quoted"


def test_request_body():
    assert request_body(parse("rpc", "send", "d", "m")) == {"method": "m", "params": {}}
    args = parse("rpc", "send", "d", "m", "[1]", "--persistent", "--rpc-timeout", "7000",
                 "--expiration-time", "1700000000000")
    assert request_body(args) == {"method": "m", "params": [1], "timeout": 7000,
                                  "expirationTime": 1700000000000, "persistent": True}


def test_http_timeout_outlasts_the_rpc():
    assert http_timeout(parse("rpc", "send", "d", "m"), 10.0) == 15.0            # server default 10 s + 5
    assert http_timeout(parse("rpc", "send", "d", "m", "--rpc-timeout", "1000"), 10.0) == 10.0   # raised to 5 s
    assert http_timeout(parse("rpc", "send", "d", "m", "--rpc-timeout", "60000"), 10.0) == 65.0
    assert http_timeout(parse("rpc", "send", "d", "m", "--oneway", "--rpc-timeout", "60000"), 10.0) == 65.0
    args = parse("rpc", "send", "d", "m", "--expiration-time", "1000000")
    assert http_timeout(args, 10.0, now_ms=1000000 - 30000) == 35.0
    # an explicit --timeout wins, before or after the command; persistent answers at once
    assert http_timeout(parse("rpc", "send", "d", "m", "--rpc-timeout", "60000", "--timeout", "3"), 10.0) == 3
    assert http_timeout(parse("--timeout", "4", "rpc", "send", "d", "m", "--rpc-timeout", "60000"), 10.0) == 4
    assert http_timeout(parse("rpc", "send", "d", "m", "--persistent", "--rpc-timeout", "60000"), 10.0) == 10.0
