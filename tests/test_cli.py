"""The ``tbcoap`` command line, run as a subprocess against a real ``twistd -n tbcoap``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

from tests.conftest import ADMIN_KEY

KEY = ADMIN_KEY
BIN = os.path.dirname(sys.executable)
LISTEN = re.compile(r"(CoAP|HTTP) listening on (?:udp|tcp) (\S+):(\d+)")


def tbcoap(*args, url=None, key=KEY, env=None, cwd=None, timeout=60):
    """Run ``python -m tbcoap.cli [--url URL] [--key KEY] ARGS``; the CompletedProcess."""
    command = [sys.executable, "-m", "tbcoap.cli"]
    if url:
        command += ["--url", url]
    if key:
        command += ["--key", key]
    environment = {k: v for k, v in os.environ.items() if k != "TBCOAP_ADMIN_KEY"}
    environment.update(env or {})
    return subprocess.run(command + list(args), capture_output=True, text=True, env=environment,
                          cwd=cwd, timeout=timeout)


def ok(result):
    """Assert exit 0 and return stdout."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(server, name, token):
    """A device via the CLI's --json; its JSON."""
    return json.loads(ok(tbcoap("--json", "device", "create", name, "--token", token, url=server.url)))


# -- a hand-made CoAP POST ---------------------------------------------------

def _option(delta, value):
    def nibble(n):
        return (n, b"") if n < 13 else (13, bytes([n - 13])) if n < 269 else (14, (n - 269).to_bytes(2, "big"))
    d, d_ext = nibble(delta)
    n, n_ext = nibble(len(value))
    return bytes([d << 4 | n]) + d_ext + n_ext + value


def coap_post(port, segments, payload: bytes, mid=None):
    """CON POST to coap://127.0.0.1:port/segments...; the ACK's code byte."""
    mid = mid if mid is not None else int.from_bytes(os.urandom(2), "big")
    token = os.urandom(4)
    datagram = bytes([0x40 | len(token), 2]) + mid.to_bytes(2, "big") + token
    delta = 11
    for segment in segments:
        datagram += _option(delta, segment.encode())
        delta = 0
    datagram += b"\xff" + payload
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for _ in range(4):
            sock.sendto(datagram, ("127.0.0.1", port))
            try:
                while True:
                    answer = sock.recv(2048)
                    if answer[0] >> 4 & 3 == 2 and answer[2:4] == mid.to_bytes(2, "big"):
                        return answer[1]
            except socket.timeout:
                continue
    raise AssertionError("no ACK from the CoAP server")


def post_telemetry(server, token, values):
    code = coap_post(server.coap_port, ["api", "v1", token, "telemetry"], json.dumps(values).encode())
    assert code == 65, f"CoAP answer code {code >> 5}.{code & 31:02d}"


# -- keys and errors -----------------------------------------------------------

def test_missing_key_exits_2(server, tmp_path):
    result = tbcoap("device", "list", url=server.url, key=None, cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--key" in result.stderr and "TBCOAP_ADMIN_KEY" in result.stderr and "--data-dir" in result.stderr


def test_key_from_environment_and_data_dir(server, tmp_path):
    assert tbcoap("device", "list", url=server.url, key=None, env={"TBCOAP_ADMIN_KEY": KEY}).returncode == 0
    (tmp_path / "admin.key").write_text(KEY + "\n")
    assert tbcoap("--data-dir", str(tmp_path), "device", "list", url=server.url, key=None).returncode == 0
    # the server's own data dir holds no key file when --admin-key is given
    result = tbcoap("--data-dir", server.data_dir, "device", "list", url=server.url, key=None)
    assert result.returncode == 2


def test_wrong_key_is_401(server):
    result = tbcoap("device", "list", url=server.url, key="wrong")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("tbcoap: 401 ")
    assert "(the key from --key;" in result.stderr


def test_a_refused_key_names_where_it_came_from(server, tmp_path):
    result = tbcoap("device", "list", url=server.url, key=None, env={"TBCOAP_ADMIN_KEY": "wrong"})
    assert result.returncode == 1
    assert "(the key from $TBCOAP_ADMIN_KEY;" in result.stderr
    (tmp_path / "admin.key").write_text("wrong\n")
    result = tbcoap("--data-dir", str(tmp_path), "device", "list", url=server.url, key=None)
    assert result.returncode == 1
    assert f"(the key from {tmp_path / 'admin.key'};" in result.stderr


def test_server_down(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = tbcoap("device", "list", url=url)
    assert result.returncode == 1
    assert url in result.stderr and "cannot connect" in result.stderr and "refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_timeout():
    with socket.socket() as sock:  # listens, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        result = tbcoap("--timeout", "0.5", "device", "list", url=url)
    assert result.returncode == 1
    assert "no answer" in result.stderr and url in result.stderr
    assert time.monotonic() - started < 20


def test_usage_errors(server):
    assert tbcoap("device", "list", "--page-size", "0", url=server.url).returncode == 2
    assert tbcoap("device", url=server.url).returncode == 2
    assert tbcoap("--url", "localhost:8080", "device", "list").returncode == 2
    result = tbcoap("attributes", "set", "x", "--scope", "CLIENT_SCOPE", "a=1", url=server.url)
    assert result.returncode == 2 and "CLIENT_SCOPE" in result.stderr
    result = tbcoap("attributes", "set", "x", "--scope", "SHARED_SCOPE", url=server.url)
    assert result.returncode == 2 and "nothing to set" in result.stderr
    assert tbcoap("attributes", "set", "x", "--scope", "shared", "novalue", url=server.url).returncode == 2
    assert tbcoap("telemetry", "history", "x", url=server.url).returncode == 2  # --keys is required


def test_unknown_device(server):
    for ref in ("no-such-device", str(uuid.uuid4())):
        for command in (["device", "show", ref], ["device", "delete", ref], ["telemetry", "latest", ref]):
            result = tbcoap(*command, url=server.url)
            assert result.returncode == 1, command
            assert result.stderr.startswith("tbcoap: 404 "), result.stderr
            assert ref in result.stderr


# -- devices -------------------------------------------------------------------

def test_device_lifecycle(server):
    name, token = unique("dev"), unique("tok")
    out = ok(tbcoap("device", "create", name, "--type", "thermometer", "--label", "kitchen",
                    "--token", token, url=server.url))
    assert re.search(rf"^name:\s+{name}$", out, re.M) and re.search(rf"^token:\s+{token}$", out, re.M)
    assert re.search(r"^type:\s+thermometer$", out, re.M) and re.search(r"^label:\s+kitchen$", out, re.M)
    device = json.loads(ok(tbcoap("--json", "device", "show", name, url=server.url)))
    device_id = device["id"]["id"]
    assert device["name"] == name and device["type"] == "thermometer" and device["customerId"] is None

    listing = ok(tbcoap("device", "list", url=server.url))
    header, *rows = listing.splitlines()
    assert header.split() == ["NAME", "TYPE", "ID", "CREATED"]
    row = next(r for r in rows if r.startswith(name + " "))
    assert row.split()[1:3] == ["thermometer", device_id]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row.split()[3])
    assert rows[0].index(rows[0].split()[2]) == header.index("ID")  # aligned columns

    page = json.loads(ok(tbcoap("--json", "device", "list", "--page-size", "1000", url=server.url)))
    assert device in page["data"] and {"totalPages", "totalElements", "hasNext"} <= set(page)

    by_id = ok(tbcoap("device", "show", device_id, url=server.url))
    assert re.search(rf"^id:\s+{device_id}$", by_id, re.M) and re.search(rf"^name:\s+{name}$", by_id, re.M)

    assert ok(tbcoap("device", "token", name, url=server.url)).strip() == token
    new_token = unique("tok")
    ok(tbcoap("device", "token", device_id, "--set", new_token, url=server.url))
    creds = json.loads(ok(tbcoap("--json", "device", "token", name, url=server.url)))
    assert creds["credentialsId"] == new_token and creds["credentialsType"] == "ACCESS_TOKEN"
    assert coap_post(server.coap_port, ["api", "v1", token, "telemetry"], b'{"a":1}') == 0x81  # 4.01
    post_telemetry(server, new_token, {"a": 1})

    out = ok(tbcoap("device", "delete", name, url=server.url))
    assert name in out and device_id in out
    result = tbcoap("device", "show", device_id, url=server.url)
    assert result.returncode == 1 and result.stderr.startswith("tbcoap: 404 ")


def test_create_duplicate_name_is_400(server):
    name = unique("dup")
    ok(tbcoap("device", "create", name, url=server.url))
    result = tbcoap("device", "create", name, url=server.url)
    assert result.returncode == 1 and result.stderr.startswith("tbcoap: 400 ")


def test_list_pages(server):
    for _ in range(3):
        ok(tbcoap("device", "create", unique("page"), url=server.url))
    out = ok(tbcoap("device", "list", "--page-size", "2", "--page", "0", url=server.url))
    assert len(out.splitlines()) == 4  # header, 2 rows, where-am-I line
    assert "next: --page 1" in out.splitlines()[-1]


def test_global_options_after_the_command(server):
    name = unique("late")
    ok(tbcoap("device", "create", name, url=server.url))
    out = ok(tbcoap("device", "show", name, "--json", "--url", server.url, "--key", KEY, key=None))
    assert json.loads(out)["name"] == name


# -- telemetry -----------------------------------------------------------------

def test_telemetry_latest_and_history(server):
    name, token = unique("tel"), unique("tok")
    create(server, name, token)
    now = int(time.time() * 1000)
    post_telemetry(server, token, {"ts": now - 3 * 24 * 3600 * 1000, "values": {"temp": 1.0}})
    post_telemetry(server, token, {"ts": now - 2000, "values": {"temp": 20.5, "hum": 40}})
    post_telemetry(server, token, {"ts": now - 1000, "values": {"temp": 21.5}})

    latest = json.loads(ok(tbcoap("--json", "telemetry", "latest", name, url=server.url)))
    assert latest["temp"][0] == {"ts": now - 1000, "value": "21.5"} and latest["hum"][0]["value"] == "40"
    only = json.loads(ok(tbcoap("--json", "telemetry", "latest", name, "--keys", "hum", url=server.url)))
    assert list(only) == ["hum"]
    out = ok(tbcoap("telemetry", "latest", name, url=server.url))
    assert out.splitlines()[0].split() == ["KEY", "TIME", "VALUE"]
    assert any(line.split()[0] == "temp" and line.split()[2] == "21.5" for line in out.splitlines()[1:])

    # default range: the last 24 hours, newest first
    history = json.loads(ok(tbcoap("--json", "telemetry", "history", name, "--keys", "temp", url=server.url)))
    assert [p["value"] for p in history["temp"]] == ["21.5", "20.5"]
    history = json.loads(ok(tbcoap("--json", "telemetry", "history", name, "--keys", "temp,hum", "--start", "0",
                                   "--asc", url=server.url)))
    assert [p["value"] for p in history["temp"]] == ["1.0", "20.5", "21.5"] and len(history["hum"]) == 1
    out = ok(tbcoap("telemetry", "history", name, "--keys", "temp", "--start", "1970-01-01T00:00:00Z",
                    "--limit", "2", url=server.url))
    values = [line.split()[2] for line in out.splitlines()[1:] if line.startswith("temp")]
    assert values == ["21.5", "20.5"] and "--limit 2 reached" in out
    result = tbcoap("telemetry", "history", name, "--keys", "temp", "--start", "10", "--end", "5", url=server.url)
    assert result.returncode == 2


# -- attributes ----------------------------------------------------------------

def test_attributes(server):
    name, token = unique("attr"), unique("tok")
    create(server, name, token)
    ok(tbcoap("attributes", "set", name, "--scope", "SHARED_SCOPE", "n=5", "f=2.5", "b=true", "s=hello",
              'q="true"', 'o={"x":1}', url=server.url))
    ok(tbcoap("attributes", "set", name, "--scope", "server", "--json-body", '{"mode": "eco", "level": 3}',
              url=server.url))
    shared = json.loads(ok(tbcoap("--json", "attributes", "get", name, "--scope", "SHARED_SCOPE", url=server.url)))
    assert {a["key"]: a["value"] for a in shared} == {"n": 5, "f": 2.5, "b": True, "s": "hello", "q": "true",
                                                      "o": {"x": 1}}
    some = json.loads(ok(tbcoap("--json", "attributes", "get", name, "--scope", "SERVER_SCOPE", "--keys",
                                "mode,level", url=server.url)))
    assert {a["key"]: a["value"] for a in some} == {"mode": "eco", "level": 3}

    out = ok(tbcoap("attributes", "get", name, url=server.url))
    assert out.splitlines()[0].split() == ["SCOPE", "KEY", "VALUE", "UPDATED"]
    rows = {tuple(line.split()[:3]) for line in out.splitlines()[1:]}
    assert ("SHARED_SCOPE", "n", "5") in rows and ("SERVER_SCOPE", "mode", "eco") in rows

    out = ok(tbcoap("attributes", "delete", name, "--scope", "SHARED_SCOPE", "--keys", "n,s", url=server.url))
    assert "n, s" in out
    left = json.loads(ok(tbcoap("--json", "attributes", "get", name, "--scope", "shared", url=server.url)))
    assert {a["key"] for a in left} == {"f", "b", "q", "o"}


def test_plugins_lists_what_the_server_uses(server):
    out = ok(tbcoap("plugins", url=server.url))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["NAME", "VERSION", "ACTIVE", "SOURCE", "HOOKS"]
    assert rows["sqlite"][2] == "yes" and "store_backends" in rows["sqlite"][-1]
    assert rows["echo"][2] == "yes" and rows["tbcoap.builtins"][2] == "yes"
    described = json.loads(ok(tbcoap("--json", "plugins", url=server.url)))
    assert {p["name"] for p in described} >= {"sqlite", "echo", "tbcoap.builtins"}


def test_version():
    assert ok(tbcoap("--version", key=None)).strip() == f"tbcoap {tbcoap_version()}"


def tbcoap_version():
    import tbcoap as package

    return package.__version__


def test_device_list_search_and_sort(server):
    prefix = unique("srch")
    for suffix in ("b", "a", "c"):
        create(server, f"{prefix}-{suffix}", unique("tok"))
    out = ok(tbcoap("device", "list", "--search", prefix.upper(), "--sort", "name", "--desc", url=server.url))
    assert [line.split()[0] for line in out.splitlines()[1:]] == [f"{prefix}-c", f"{prefix}-b", f"{prefix}-a"]


def test_device_certificate(server, tmp_path):
    from tests.certs import make_cert

    name, token = unique("x509"), unique("tok")
    create(server, name, token)
    issued = make_cert(None, name, client=True)
    pem = tmp_path / "device.pem"
    pem.write_bytes(issued.cert_pem)
    out = ok(tbcoap("device", "certificate", name, str(pem), url=server.url))
    creds = json.loads(ok(tbcoap("--json", "device", "token", name, url=server.url)))
    assert creds["credentialsType"] == "X509_CERTIFICATE" and creds["credentialsId"] in out
    result = tbcoap("device", "token", name, url=server.url)  # no token to print
    assert result.returncode == 1 and "X.509 certificate" in result.stderr and not result.stdout
    assert coap_post(server.coap_port, ["api", "v1", token, "telemetry"], b'{"a":1}') == 0x81  # 4.01
    for bad, message in ((tmp_path / "missing.pem", "cannot read"), (tmp_path / "junk.pem", "not a PEM")):
        if "junk" in bad.name:
            bad.write_text("junk")
        result = tbcoap("device", "certificate", name, str(bad), url=server.url)
        assert result.returncode == 1 and message in result.stderr, result.stderr
    ok(tbcoap("device", "token", name, "--set", token, url=server.url))  # and back to a token
    post_telemetry(server, token, {"a": 2})
