"""The service as an operator and an embedder see it (docs/configuration.md).

Real ``twistd -n tbcoap`` subprocesses, blocking UDP sockets for CoAP and
urllib for REST; one in-process test for embedding.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest
import pytest_twisted
import treq
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.python import usage

import tbcoap
from tbcoap.service import Options
from tests.blocking import Coap, rest
from tests.coapclient import GET, POST, open_client
from tests.conftest import ADMIN_KEY, LOOPBACK_PORTS, TWISTD, Server

# what every test server needs: loopback CoAP and free ports
PORTS = LOOPBACK_PORTS

CREATED, CONTENT, BAD_REQUEST, UNAUTHORIZED, NOT_ALLOWED, TOO_LARGE = 65, 69, 128, 129, 133, 141


# -- helpers -----------------------------------------------------------------

def create_device(server, name, token, key=ADMIN_KEY):
    status, body = rest(server.http_url, "POST", f"/api/device?accessToken={token}",
                        {"name": name, "type": "default"}, key=key)
    assert status == 200, body
    return body["id"]["id"]


def history(server, device_id, key, start, end):
    status, body = rest(server.http_url, "GET",
                        f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries"
                        f"?keys={key}&startTs={start}&endTs={end}&limit=100000&orderBy=ASC")
    assert status == 200, body
    return {int(p["ts"]): p["value"] for p in body.get(key, [])}


# twistd ends a clean SIGTERM shutdown by re-raising the signal on itself
# (twisted.application.app._exitWithSignal), so -SIGTERM is a clean exit too,
# as systemd counts it; a clean stop is told by its log lines.
CLEAN_EXITS = (0, -signal.SIGTERM)


def run_twistd(*args, cwd, timeout=30):
    """``(exit code, stdout+stderr)`` of a twistd run that is expected to end by itself."""
    env = dict(os.environ)
    env.pop("TBCOAP_ADMIN_KEY", None)
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "tbcoap", *args], cwd=cwd, env=env, timeout=timeout,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return result.returncode, result.stdout


# -- 1. --help ---------------------------------------------------------------

FIXED_OPTIONS = ["--coap-port", "--coap-interface", "--http-port", "--http-interface", "--data-dir", "--store",
                "--rules", "--admin-key", "--config", "--max-body", "--sync", "--device-rate-limit",
                "--peer-rate-limit"]


def test_help_documents_every_option(tmp_path):
    result = subprocess.run([TWISTD, "tbcoap", "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    for option in FIXED_OPTIONS:
        lines = [line for line in result.stdout.splitlines() if re.search(rf"{option}=?\s", line + " ")]
        assert lines, f"{option} missing from twistd tbcoap --help:\n{result.stdout}"
        # documented, not only named: some help text follows the option
        assert any(len(line.split(option, 1)[1].strip(" =")) > 3 for line in lines), lines


def test_twistd_help_lists_tbcoap(tmp_path):
    result = subprocess.run([TWISTD, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+tbcoap\s+\S", result.stdout, re.M), result.stdout


# -- 2. bad starts -------------------------------------------------------------

def _bad_config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_STARTS = {
    "unknown-store-scheme": (lambda tmp: ["--store", "foo://x"], ["store", "foo"]),
    "bad-sync": (lambda tmp: ["--sync", "bogus"], ["--sync"]),
    "unknown-rule": (lambda tmp: ["--rules", "nosuchrule"], ["rules", "nosuchrule"]),
    "coap-port-not-a-number": (lambda tmp: ["--coap-port", "abc"], ["coap-port"]),
    "coap-port-too-big": (lambda tmp: ["--coap-port", "70000"], ["coap-port"]),
    "bad-rate-limit": (lambda tmp: ["--device-rate-limit", "1:x"], ["device-rate-limit"]),
    "config-unknown-key": (lambda tmp: ["--config", _bad_config(tmp, "c.toml", "bogus-key = 1\n")],
                           ["bogus-key"]),
    "config-invalid-toml": (lambda tmp: ["--config", _bad_config(tmp, "bad.toml", "http-port = = 0\n")],
                            ["bad.toml"]),
    "config-missing": (lambda tmp: ["--config", str(tmp / "missing.toml")], ["missing.toml"]),
    "config-is-a-directory": (lambda tmp: ["--config", str(tmp)], ["config"]),
    "config-value-of-wrong-type": (lambda tmp: ["--config", _bad_config(tmp, "t.toml", 'coap-port = "5683"\n')],
                                   ["coap-port", "t.toml", "integer"]),
    "unknown-option": (lambda tmp: ["--no-such-option"], ["no-such-option"]),
    "plugin-option-not-a-setting": (lambda tmp: ["--plugin-option", "nonsense"], ["plugin-option", "NAME.KEY=VALUE"]),
    "plugin-option-unknown-plugin": (lambda tmp: ["--plugin-option", "ghost.url=x"], ["ghost", "no installed plugin"]),
    "plugin-option-no-settings": (lambda tmp: ["--plugin-option", "echo.speed=2"], ["echo", "takes no settings"]),
    "plugins-table-unknown-plugin": (lambda tmp: ["--config", _bad_config(tmp, "p.toml", "[plugins.ghost]\nurl = 1\n")],
                                     ["[plugins.ghost]", "no installed plugin"]),
    "workers-on-sqlite": (lambda tmp: ["--workers", "2"], ["--workers needs a store several nodes can share"]),
    "store-url-option-misspelt": (lambda tmp: ["--store", "redis://127.0.0.1:1/0?prefx=p"], ["--store", "prefx"]),
    "dtls-cert-without-key": (lambda tmp: ["--dtls-cert", str(tmp / "c.pem")], ["--dtls-cert", "--dtls-key"]),
}


def _assert_clear_failure(code, output, *words):
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if all(w.lower() in line.lower() for w in words)]
    assert lines, f"no single line names {words}:\n{output}"


@pytest.mark.parametrize("case", list(BAD_STARTS))
def test_bad_start_is_one_clear_line(tmp_path, case):
    make_args, words = BAD_STARTS[case]
    code, output = run_twistd("--data-dir", str(tmp_path / "data"), "--admin-key", "k", *PORTS,
                              *make_args(tmp_path), cwd=tmp_path)
    _assert_clear_failure(code, output, *words)
    # the one line, not the help text before it: it says how to get help instead
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("twistd tbcoap: ") and "twistd tbcoap --help" in output


def test_version(tmp_path):
    code, output = run_twistd("--version", cwd=tmp_path)
    assert code == 0 and output.strip() == f"tbcoap {tbcoap.__version__}"


def _assert_port_in_use(code, output, data_dir, *words):
    _assert_clear_failure(code, output, *words)
    # said once (not also on stderr), with the way out, and nothing written for a start that failed
    assert len([line for line in output.splitlines() if "cannot listen" in line]) == 1, output
    assert "admin.key" not in os.listdir(data_dir), "a failed start wrote the admin key"


def test_http_port_in_use_is_one_clear_line(tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        code, output = run_twistd("--data-dir", str(tmp_path / "data"), "--coap-interface", "127.0.0.1",
                                  "--coap-port", "0", "--http-interface", "127.0.0.1", "--http-port", str(port),
                                  cwd=tmp_path)
    finally:
        taken.close()
    _assert_port_in_use(code, output, tmp_path / "data", "HTTP", str(port), "--http-port")


def test_coap_port_in_use_is_one_clear_line(tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        code, output = run_twistd("--data-dir", str(tmp_path / "data"), "--http-port", "0",
                                  "--coap-interface", "127.0.0.1", "--coap-port", str(port), cwd=tmp_path)
    finally:
        taken.close()
    _assert_port_in_use(code, output, tmp_path / "data", "CoAP", str(port), "--coap-port")


@pytest.mark.parametrize("text", ["coap-port = 1.5\n", "max-body = true\n"])
def test_config_value_of_wrong_type_is_refused(tmp_path, text):
    config = _bad_config(tmp_path, "typed.toml", text)
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--config", config, "--data-dir", str(tmp_path / "data")])


# -- 3. the config file ----------------------------------------------------------

def _config(tmp_path):
    path = tmp_path / "tbcoap.toml"
    path.write_text('coap-port = 0\nhttp-port = 0\ncoap-interface = "127.0.0.1"\n'
                    'admin-key = "config-key"\nmax-body = 10\n')
    return str(path)


def _server_from(tmp_path, *args, log_name):
    server = Server(tmp_path / "data", "--config", _config(tmp_path), *args, log_name=log_name)
    return server.start()


def test_config_file_is_honoured_and_options_override_it(tmp_path):
    servers = []
    try:
        # the config file alone: its ports (0, not 5683/8080), its key and its body limit
        server = _server_from(tmp_path, log_name="first.log")
        servers.append(server)
        assert server.ports["CoAP"] not in (0, 5683) and server.ports["HTTP"] not in (0, 8080)
        assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key="config-key")[0] == 200
        assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key=ADMIN_KEY)[0] == 401
        create_device(server, "cfg", "CFG-TOKEN", key="config-key")
        payload = json.dumps({"temperature": 21.5, "padding": "x" * 14}).encode()
        assert 40 <= len(payload) <= 60
        client = Coap(server.coap_address)
        try:
            assert client.request(POST, "/api/v1/CFG-TOKEN/telemetry", payload) == TOO_LARGE
        finally:
            client.close()
        server.stop(signal.SIGTERM)

        # options win over the file
        server = _server_from(tmp_path, "--max-body", "100", "--admin-key", ADMIN_KEY, log_name="second.log")
        servers.append(server)
        assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key=ADMIN_KEY)[0] == 200
        assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key="config-key")[0] == 401
        client = Coap(server.coap_address)
        try:
            assert client.request(POST, "/api/v1/CFG-TOKEN/telemetry", payload) == CREATED
        finally:
            client.close()
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(10)


# -- 4. port 0 and the listening lines ------------------------------------------------

def test_port_zero_logs_the_bound_ports(launch):
    server = launch()
    log = server.read_log()
    coap_lines = re.findall(r"CoAP listening on udp (\S+):(\d+)$", log, re.M)
    http_lines = re.findall(r"HTTP listening on tcp (\S+):(\d+)$", log, re.M)
    assert len(coap_lines) == 1 and len(http_lines) == 1, log
    (coap_host, coap_port), (http_host, http_port) = coap_lines[0], http_lines[0]
    assert coap_host == "127.0.0.1" and http_host == "127.0.0.1"
    assert int(coap_port) > 0 and int(http_port) > 0
    # announced once the store is open and requests are served, not before
    assert log.index("store sqlite open") < log.index("CoAP listening") < log.index("HTTP listening"), log
    # one line names the version and the plugins in use
    assert f"tbcoap {tbcoap.__version__} using store sqlite (plugin sqlite), rules echo, auth tbcoap.builtins\n" \
        in log
    # the logged ports are the real ones
    assert rest(f"http://127.0.0.1:{http_port}", "GET", "/api/health", key=None)[0] == 200
    client = Coap(("127.0.0.1", int(coap_port)))
    try:
        assert client.request(POST, "/api/v1/NO-SUCH-TOKEN/telemetry", b"{}") == UNAUTHORIZED
    finally:
        client.close()


# -- 5. the admin key ------------------------------------------------------------------

def test_generated_admin_key(launch, tmp_path):
    data_dir = tmp_path / "data"
    server = launch(key=None)
    key_path = data_dir / "admin.key"
    assert key_path.exists(), server.read_log()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = key_path.read_text().strip()
    assert len(key) >= 16
    log = server.read_log()
    assert str(key_path) in log, log
    assert key not in log
    assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key=key)[0] == 200
    assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key=key + "x")[0] == 401
    assert server.stop(signal.SIGTERM) in CLEAN_EXITS

    # the same key after a restart, and the log says where it is
    server = launch(key=None, log_name="restart.log")
    assert f"REST admin key from {key_path} (generated on the first start)" in server.read_log()
    assert key not in server.read_log()
    assert key_path.read_text().strip() == key
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key=key)[0] == 200


def test_admin_key_from_environment(launch, tmp_path):
    server = launch(key=None, env={"TBCOAP_ADMIN_KEY": "env-admin-key"})
    assert "REST admin key from $TBCOAP_ADMIN_KEY" in server.read_log()
    assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key="env-admin-key")[0] == 200
    assert rest(server.http_url, "GET", "/api/tenant/devices?pageSize=10", key=ADMIN_KEY)[0] == 401
    assert not (tmp_path / "data" / "admin.key").exists()


# -- 6. a 2.01 survives kill -9 ---------------------------------------------------------

def test_acknowledged_telemetry_survives_sigkill(launch):
    server = launch()
    device_id = create_device(server, "durable", "DURABLE-TOKEN")
    base, count = 1_700_000_000_000, 200
    client = Coap(server.coap_address)
    try:
        for i in range(count):
            payload = json.dumps({"ts": base + i, "values": {"n": i}})
            code = client.request(POST, "/api/v1/DURABLE-TOKEN/telemetry", payload, token=i.to_bytes(2, "big"))
            assert code == CREATED, (i, code)
    finally:
        client.close()
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    assert server.proc.returncode == -signal.SIGKILL

    server = launch(log_name="after-kill.log")
    points = history(server, device_id, "n", base, base + count - 1)
    missing = sorted(set(range(base, base + count)) - set(points))
    assert not missing, f"{len(missing)} acknowledged points lost, first {missing[:5]}"
    assert points == {base + i: str(i) for i in range(count)}


# -- 7. SIGTERM ---------------------------------------------------------------------------

def test_sigterm_stops_cleanly_and_loses_nothing(launch):
    server = launch()
    device_id = create_device(server, "term", "TERM-TOKEN")
    base = 1_700_000_100_000
    client = Coap(server.coap_address)
    try:
        for i in range(20):
            payload = json.dumps({"ts": base + i, "values": {"n": i}})
            assert client.request(POST, "/api/v1/TERM-TOKEN/telemetry", payload, token=b"a" + bytes([i])) == CREATED
        # a burst still in flight when SIGTERM arrives: whatever gets 2.01 must be kept
        sent = {}
        for i in range(20, 80):
            token = b"b" + bytes([i])
            client.send(POST, "/api/v1/TERM-TOKEN/telemetry", json.dumps({"ts": base + i, "values": {"n": i}}),
                        token=token)
            sent[token] = base + i
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for i in range(80, 100):  # and some while it stops: refused (5.03) or answered 2.01 and kept
            token = b"c" + bytes([i])
            client.send(POST, "/api/v1/TERM-TOKEN/telemetry", json.dumps({"ts": base + i, "values": {"n": i}}),
                        token=token)
            sent[token] = base + i
        acknowledged = set()
        while (answer := client.receive(2.0)) is not None:
            _, code, _, token, _ = answer
            if code == CREATED and token in sent:
                acknowledged.add(sent[token])
    finally:
        client.close()
    code = server.proc.wait(10)
    elapsed = time.monotonic() - started
    server.log.close()
    log = server.read_log()
    assert code in CLEAN_EXITS, log
    assert elapsed < 8, elapsed
    assert "tbcoap stopped" in log and "Server Shut Down" in log, log

    server = launch(log_name="after-term.log")
    points = history(server, device_id, "n", base, base + 100)
    assert set(range(base, base + 20)) <= set(points)
    lost = sorted(acknowledged - set(points))
    assert not lost, f"acknowledged during shutdown but lost: {lost}"


def test_sigterm_commits_pending_activity_without_errors(launch):
    server = launch()
    device_id = create_device(server, "activity", "ACT-TOKEN")
    client = Coap(server.coap_address)
    try:
        before = int(time.time() * 1000)
        assert client.request(POST, "/api/v1/ACT-TOKEN/telemetry", b'{"t":1}') == CREATED
    finally:
        client.close()
    assert server.stop(signal.SIGTERM) in CLEAN_EXITS
    log = server.read_log()
    assert "tbcoap stopped" in log

    server = launch(log_name="after-term.log")
    status, body = rest(server.http_url, "GET", f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/"
                        "SERVER_SCOPE?keys=lastActivityTime")
    assert status == 200, body
    saved = {item["key"]: item["value"] for item in body}
    assert saved.get("lastActivityTime", 0) >= before, body
    assert "Traceback" not in log and "#critical]" not in log, log


# -- 8. tokens never in logs ------------------------------------------------------------------

SECRET = "SECRETTOKEN1234567890"
UNKNOWN = "UNKNOWNTOKEN0987654321"


def test_tokens_never_in_logs(launch):
    server = launch()
    device_id = create_device(server, "secret", SECRET)
    client = Coap(server.coap_address)
    try:
        assert client.request(POST, f"/api/v1/{SECRET}/telemetry", b'{"t":1}') == CREATED
        assert client.request(POST, f"/api/v1/{SECRET}/telemetry", b'{"t":') == BAD_REQUEST
        assert client.request(POST, f"/api/v1/{SECRET}/attributes", b'{"a":1}') == CREATED
        assert client.request(GET, f"/api/v1/{SECRET}/telemetry") == NOT_ALLOWED
        assert client.request(POST, f"/api/v1/{SECRET}/nosuchfeature", b"{}") == BAD_REQUEST
        assert client.request(POST, f"/api/v1/{UNKNOWN}/telemetry", b'{"t":1}') == UNAUTHORIZED
        assert client.request(GET, f"/api/v1/{UNKNOWN}/attributes") == UNAUTHORIZED
    finally:
        client.close()
    base = server.http_url
    assert rest(base, "GET", f"/api/tenant/devices?pageSize=10&accessToken={SECRET}")[0] == 200
    assert rest(base, "GET", f"/api/device/{device_id}?accessToken={UNKNOWN}")[0] == 200
    assert rest(base, "GET", f"/api/tenant/devices?accessToken={SECRET}", key=None)[0] == 401
    assert rest(base, "POST", f"/api/device?accessToken={SECRET}", {"name": "secret-2"})[0] == 400
    assert rest(base, "POST", f"/api/device?accessToken={UNKNOWN}", {"name": "secret"})[0] == 400
    status, body = rest(base, "GET", f"/api/device/{device_id}/credentials")
    assert status == 200 and body["credentialsId"] == SECRET
    assert server.stop(signal.SIGTERM) in CLEAN_EXITS
    log = server.read_log()
    assert "tbcoap stopped" in log
    assert "accessToken=" in log, "the REST access log is expected to show the (masked) query"
    for token in (SECRET, UNKNOWN):
        assert token not in log, [line for line in log.splitlines() if token in line]


def test_token_in_referer_not_in_logs(launch):
    server = launch()
    create_device(server, "ref", SECRET)
    status, _ = rest(server.http_url, "GET", "/api/tenant/devices?pageSize=1",
                     headers={"Referer": f"http://dashboard.example/?accessToken={SECRET}"})
    assert status == 200
    assert server.stop(signal.SIGTERM) in CLEAN_EXITS
    log = server.read_log()
    assert "dashboard.example" in log  # the access log does show the Referer
    assert SECRET not in log, [line for line in log.splitlines() if SECRET in line]


def test_percent_encoded_token_parameter_not_in_logs(launch):
    server = launch()
    status, body = rest(server.http_url, "POST", f"/api/device?access%54oken={SECRET}", {"name": "enc"})
    assert status == 200, body
    status, body = rest(server.http_url, "GET", f"/api/device/{body['id']['id']}/credentials")
    assert body["credentialsId"] == SECRET  # the server did take it as the access token
    assert server.stop(signal.SIGTERM) in CLEAN_EXITS
    log = server.read_log()
    assert SECRET not in log, [line for line in log.splitlines() if SECRET in line]


# -- 9. embedding --------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_embedding_under_a_multiservice(tmp_path):
    parent = MultiService()
    service = tbcoap.make_service(["--coap-port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "data"),
                                   "--admin-key", "k"])
    service.setServiceParent(parent)
    parent.startService()
    client = None
    try:
        await service.opened
        client = await open_client(("127.0.0.1", service.coap_address[1]))
        answer = await client.request(POST, "/api/v1/NO-SUCH-TOKEN/telemetry", b'{"t":1}')
        assert answer.code == UNAUTHORIZED
        answer = await client.request(GET, "/.well-known/core")
        assert answer.code == CONTENT
        base = f"http://127.0.0.1:{service.http_address[1]}"
        response = await treq.get(base + "/api/health")
        assert response.code == 200
        assert json.loads(await response.content()) == {"status": "UP"}
        response = await treq.get(base + "/api/tenant/devices?pageSize=1", headers={"X-Authorization": "Bearer k"})
        assert response.code == 200
        await response.content()
    finally:
        if client is not None:
            await defer.maybeDeferred(client.port.stopListening)
        await parent.stopService()
    assert not service.running


def test_embedding_rejects_bad_options_without_exiting(tmp_path):
    with pytest.raises(usage.UsageError):
        tbcoap.make_service(["--sync", "bogus", "--data-dir", str(tmp_path)])
    with pytest.raises(usage.UsageError):
        tbcoap.make_service(data_dir=str(tmp_path), store="foo://x")


def test_a_file_that_is_not_a_database_stops_the_start_with_exit_1(tmp_path):
    bad = tmp_path / "corrupt.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "tbcoap", "--coap-port", "0", "--http-port", "0",
                             "--admin-key", "k", "--data-dir", str(tmp_path / "d"), "--store", f"sqlite://{bad}"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot open the store" in result.stdout + result.stderr


# -- 7. several nodes from one folder ------------------------------------------------------

class _NoPidfileOption(Server):
    """``twistd [-n] tbcoap ...`` as a user types it: no ``--pidfile``; run from the folder that
    holds the data directory, where its log is written too."""

    def __init__(self, data_dir, daemon=False):
        super().__init__(data_dir, log_name=f"{os.path.basename(str(data_dir))}.log")
        self.daemon = daemon

    def command(self):
        head = [TWISTD, f"--logfile={self.log_path}"] if self.daemon else [TWISTD, "-n"]
        return [*head, "tbcoap", "--data-dir", self.data_dir, "--admin-key", ADMIN_KEY, *LOOPBACK_PORTS]


def test_two_foreground_nodes_start_from_one_folder_without_a_pidfile(tmp_path):
    nodes = [_NoPidfileOption(tmp_path / name) for name in ("node-a", "node-b")]
    try:
        for node in nodes:
            node.start()
        assert not (tmp_path / "twistd.pid").exists()
        assert not any(name.endswith(".pid") for node in nodes for name in os.listdir(node.data_dir))
        for node in nodes:
            assert rest(node.url, "GET", "/api/health", key=None)[0] == 200
    finally:
        for node in nodes:
            node.stop()


def test_a_daemon_keeps_its_pidfile_in_its_data_directory(tmp_path):
    data_dir = tmp_path / "data"
    command = _NoPidfileOption(data_dir, daemon=True)
    code = subprocess.run(command.command(), cwd=tmp_path, timeout=30).returncode
    assert code == 0  # twistd forked the daemon and returned
    pidfile = data_dir / "twistd.pid"
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and "HTTP listening" in open(command.log_path).read()):
        assert time.monotonic() < deadline, open(command.log_path).read()
        time.sleep(0.05)
    assert not (tmp_path / "twistd.pid").exists()
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}") or pidfile.exists():
        assert time.monotonic() < deadline, "the daemon did not stop and remove its pidfile"
        time.sleep(0.05)
    assert "tbcoap stopped" in open(command.log_path).read()
