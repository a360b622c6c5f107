"""``tbcoap customer``, ``tbcoap claim`` and ``tbcoap profile`` against a real ``twistd -n tbcoap``,
with the device side (claim requests, provisioning, telemetry) played over a plain UDP socket
(requests encoded by tests.coapclient, answers decoded by txThings)."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
import uuid

import pytest
from txthings import coap as tx

from tbcoap.cli.main import build_parser
from tests.conftest import ADMIN_KEY
from tests.coapclient import ACK, POST, build, code_text

CREATED = 65       # 2.01
BAD_REQUEST = 128  # 4.00


def tbcoap(server, *args, key=ADMIN_KEY, timeout=60):
    """Run ``python -m tbcoap.cli --url URL --key KEY ARGS`` to the end; the CompletedProcess."""
    environment = {k: v for k, v in os.environ.items() if k != "TBCOAP_ADMIN_KEY"}
    # --key=KEY: a customer key may start with "-" (see test_customer_key_starting_with_dash)
    argv = [sys.executable, "-m", "tbcoap.cli", "--url", server.url, f"--key={key}", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=timeout)


def ok(result):
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def fails(result, code=1):
    """Assert exit ``code`` with nothing on stdout and no traceback; stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_customer(server, title=None):
    """A new customer via the CLI's --json; (id, api key)."""
    customer = json.loads(ok(tbcoap(server, "--json", "customer", "create", title or unique("cust"))))
    return customer["id"]["id"], customer["apiKey"]


def make_device(server, *extra):
    """A new device; (name, token)."""
    name, token = unique("dev"), f"tok-{uuid.uuid4().hex[:12]}"
    ok(tbcoap(server, "--json", "device", "create", name, "--token", token, *extra))
    return name, token


def show(server, name):
    """The device as the admin sees it (--json)."""
    return json.loads(ok(tbcoap(server, "--json", "device", "show", name)))


# -- the device's side over UDP ---------------------------------------------------

def coap_post(server, path, payload: bytes):
    """CON POST ``path`` (retransmitted until answered); the piggybacked answer (txThings Message)."""
    mid, token = int.from_bytes(os.urandom(2), "big"), os.urandom(4)
    datagram = build(POST, path, payload, mid=mid, token=token)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        for _ in range(4):
            sock.sendto(datagram, server.coap_address)
            try:
                while True:
                    data, addr = sock.recvfrom(4096)
                    message = tx.Message.decode(data, addr)
                    if message.mtype == ACK and message.mid == mid:
                        assert message.token == token
                        return message
            except socket.timeout:
                continue
    raise AssertionError(f"no ACK for POST {path}")


def request_claim(server, token, secret, duration_ms=60000):
    """The device asks to be claimed: POST /api/v1/TOKEN/claim answers 2.01."""
    body = json.dumps({"secretKey": secret, "durationMs": duration_ms}).encode()
    answer = coap_post(server, f"/api/v1/{token}/claim", body)
    assert answer.code == CREATED, code_text(answer.code)


def provision(server, **body):
    """POST /api/v1/provision; (code, JSON answer)."""
    answer = coap_post(server, "/api/v1/provision", json.dumps(body).encode())
    return answer.code, json.loads(answer.payload)


def post_telemetry(server, token, values):
    return coap_post(server, f"/api/v1/{token}/telemetry", json.dumps(values).encode()).code


# -- customers -------------------------------------------------------------------

def test_customer_create_shows_key_once(server):
    title = unique("Acme")
    out = ok(tbcoap(server, "customer", "create", title))
    lines = dict(line.split(":", 1) for line in out.splitlines()[:4])
    assert lines["title"].strip() == title
    uuid.UUID(lines["id"].strip())
    key = lines["api key"].strip()
    assert key and key != "-"
    assert "shown only this once" in out and "tbcoap --key=KEY claim" in out
    # the key works: the customer reads its (empty) device list
    assert "no devices on this page" in ok(tbcoap(server, "customer", "devices", lines["id"].strip(), key=key))
    # --json: the server's answer as it is
    raw = json.loads(ok(tbcoap(server, "--json", "customer", "create", title + "-2")))
    assert raw["title"] == title + "-2" and raw["id"]["entityType"] == "CUSTOMER" and raw["apiKey"]


def test_customer_list_and_paging(server):
    titles = [unique("list") for _ in range(3)]
    ids = [make_customer(server, t)[0] for t in titles]
    out = ok(tbcoap(server, "customer", "list", "--page-size", "10000"))
    assert out.splitlines()[0].split() == ["TITLE", "ID", "CREATED"]
    for title, customer_id in zip(titles, ids):
        assert any(title in line and customer_id in line for line in out.splitlines())
    page = json.loads(ok(tbcoap(server, "--json", "customer", "list", "--page-size", "1", "--page", "1")))
    assert len(page["data"]) == 1 and page["totalElements"] >= 3 and page["hasNext"]
    assert "apiKey" not in page["data"][0]
    out = ok(tbcoap(server, "customer", "list", "--page-size", "1"))
    assert "page 1 of" in out and "next: --page 1" in out
    assert fails(tbcoap(server, "customer", "list", "--page-size", "0"), 2)


def test_customer_devices(server):
    customer_id, key = make_customer(server)
    other_id, other_key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "s")
    ok(tbcoap(server, "claim", name, "--secret", "s", key=key))
    title = rest(server, "GET", "/api/auth/user", key=key)[1]["name"]
    for as_key in (ADMIN_KEY, key):
        for ref in (customer_id, title):  # an id or a title
            out = ok(tbcoap(server, "customer", "devices", ref, key=as_key))
            assert name in out and out.splitlines()[0].split() == ["NAME", "TYPE", "ID", "CREATED"]
    assert fails(tbcoap(server, "customer", "devices", "no such title")).startswith("tbcoap: 404 ")
    # a customer key knows only its own title
    other_title = rest(server, "GET", "/api/auth/user", key=other_key)[1]["name"]
    assert fails(tbcoap(server, "customer", "devices", other_title, key=key)).startswith("tbcoap: 404 ")
    page = json.loads(ok(tbcoap(server, "--json", "customer", "devices", customer_id)))
    assert [d["name"] for d in page["data"]] == [name]
    assert "no devices on this page" in ok(tbcoap(server, "customer", "devices", other_id))
    # another customer's devices are unknown to a customer key
    assert fails(tbcoap(server, "customer", "devices", customer_id, key=other_key)).startswith("tbcoap: 404 ")
    # customers may not list customers or create devices
    assert fails(tbcoap(server, "customer", "list", key=key)).startswith("tbcoap: 403 ")
    assert fails(tbcoap(server, "device", "create", unique("x"), key=key)).startswith("tbcoap: 403 ")


# -- claiming --------------------------------------------------------------------

def test_claim_success(server):
    customer_id, key = make_customer(server)
    name, token = make_device(server)
    assert show(server, name)["customerId"] is None
    request_claim(server, token, "s")
    result = tbcoap(server, "claim", name, "--secret", "s", key=key)
    assert ok(result) == f"claimed {name} for customer {customer_id}\n"
    assert result.stderr == ""
    assert show(server, name)["customerId"] == {"entityType": "CUSTOMER", "id": customer_id}
    out = ok(tbcoap(server, "device", "show", name))
    assert any(line.split() == ["customer:", customer_id] for line in out.splitlines())
    # the owner reads its device by id and by name with its own key
    device_id = show(server, name)["id"]["id"]
    assert json.loads(ok(tbcoap(server, "--json", "device", "show", device_id, key=key)))["name"] == name
    assert json.loads(ok(tbcoap(server, "--json", "device", "show", name, key=key)))["id"]["id"] == device_id
    ok(tbcoap(server, "telemetry", "latest", name, key=key))  # every command takes the name
    _, other_key = make_customer(server)
    assert rest(server, "GET", f"/api/device/{device_id}", key=other_key)[0] == 404
    # another customer finds it neither by id nor by name
    assert fails(tbcoap(server, "device", "show", device_id, key=other_key)).startswith("tbcoap: 404 ")
    assert fails(tbcoap(server, "device", "show", name, key=other_key)).startswith("tbcoap: 404 ")


def rest(server, method, path, body=None, key=ADMIN_KEY):
    """A plain REST call; (status, JSON answer)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"X-Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_customer_keys_work_as_plain_option_values(server):
    """Keys are hex, so ``--key KEY`` never looks like an option to argparse."""
    keys = [rest(server, "POST", "/api/customer", {"title": unique("hex")})[1]["apiKey"] for _ in range(20)]
    assert all(re.fullmatch(r"[0-9a-f]{48}", key) for key in keys)
    customer = rest(server, "POST", "/api/customer", {"title": unique("k")})[1]
    environment = {k: v for k, v in os.environ.items() if k != "TBCOAP_ADMIN_KEY"}
    result = subprocess.run([sys.executable, "-m", "tbcoap.cli", "--url", server.url, "--key", customer["apiKey"],
                             "customer", "devices", customer["id"]["id"]],
                            capture_output=True, text=True, env=environment, timeout=60)
    assert "no devices on this page" in ok(result)


def test_claim_json(server):
    customer_id, key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "")
    answer = json.loads(ok(tbcoap(server, "--json", "claim", name, "--secret", "", key=key)))
    assert answer["response"] == "SUCCESS"
    assert answer["device"]["name"] == name and answer["device"]["customerId"]["id"] == customer_id


def test_wrong_secret_fails_and_evicts_the_request(server):
    _, key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "right")
    result = tbcoap(server, "claim", name, "--secret", "wrong", key=key)
    assert fails(result) == "tbcoap: claim failed: FAILURE\n"
    assert result.stdout == ""
    # the wrong secret removed the request: the right one fails now too
    assert fails(tbcoap(server, "claim", name, "--secret", "right", key=key)) == "tbcoap: claim failed: FAILURE\n"
    assert show(server, name)["customerId"] is None
    # the device asks again: the right secret now works
    request_claim(server, token, "right")
    ok(tbcoap(server, "claim", name, "--secret", "right", key=key))


def test_no_claim_request_fails(server):
    _, key = make_customer(server)
    name, _ = make_device(server)
    result = tbcoap(server, "--json", "claim", name, "--secret", "s", key=key)
    assert fails(result) == "tbcoap: claim failed: FAILURE\n"
    assert json.loads(result.stdout) == "FAILURE"  # --json: the answer too


def test_expired_claim_request_fails(server):
    _, key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "s", duration_ms=1)
    time.sleep(0.05)
    assert fails(tbcoap(server, "claim", name, "--secret", "s", key=key)) == "tbcoap: claim failed: FAILURE\n"


def test_claimed_for_a_second_customer(server):
    first_id, first_key = make_customer(server)
    _, second_key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "s")
    ok(tbcoap(server, "claim", name, "--secret", "s", key=first_key))
    request_claim(server, token, "s")
    result = tbcoap(server, "claim", name, "--secret", "s", key=second_key)
    assert fails(result) == "tbcoap: claim failed: CLAIMED\n"
    result = tbcoap(server, "--json", "claim", name, "--secret", "s", key=second_key)
    assert fails(result) == "tbcoap: claim failed: CLAIMED\n"
    assert json.loads(result.stdout) == "CLAIMED"
    # the owner itself also gets CLAIMED (checked first, even with a wrong secret)
    assert fails(tbcoap(server, "claim", name, "--secret", "x", key=first_key)) == "tbcoap: claim failed: CLAIMED\n"
    assert show(server, name)["customerId"]["id"] == first_id


def test_release_by_owner_and_not_by_another_customer(server):
    _, owner_key = make_customer(server)
    _, other_key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "s")
    ok(tbcoap(server, "claim", name, "--secret", "s", key=owner_key))
    stderr = fails(tbcoap(server, "claim", name, "--release", key=other_key))
    assert stderr.startswith("tbcoap: 403 ") and stderr.count("\n") == 1
    assert show(server, name)["customerId"] is not None
    assert ok(tbcoap(server, "claim", name, "--release", key=owner_key)) == f"released {name}: it has no customer now\n"
    assert show(server, name)["customerId"] is None
    # free again: another customer may claim it now
    request_claim(server, token, "t")
    ok(tbcoap(server, "claim", name, "--secret", "t", key=other_key))


def test_release_by_admin(server):
    _, key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "s")
    ok(tbcoap(server, "claim", name, "--secret", "s", key=key))
    device = json.loads(ok(tbcoap(server, "--json", "claim", name, "--release")))
    assert device["name"] == name and device["customerId"] is None
    assert show(server, name)["customerId"] is None


def test_claim_errors(server):
    _, key = make_customer(server)
    name, token = make_device(server)
    request_claim(server, token, "s")
    # the admin key cannot claim: the server says why (400 with a message)
    stderr = fails(tbcoap(server, "claim", name, "--secret", "s"))
    assert stderr.startswith("tbcoap: 400 ") and "customer key" in stderr
    assert fails(tbcoap(server, "claim", unique("nosuch"), "--secret", "s", key=key)).startswith("tbcoap: 404 ")
    assert fails(tbcoap(server, "claim", name, "--secret", "s", key="wrong-key")).startswith("tbcoap: 401 ")
    # the request survived all that
    ok(tbcoap(server, "claim", name, "--secret", "s", key=key))


def test_claim_usage():
    parser = build_parser()
    args = parser.parse_args(["claim", "dev", "--secret", "s"])
    assert (args.device_name, args.secret, args.release, args.needs_key) == ("dev", "s", False, True)
    assert parser.parse_args(["claim", "dev", "--release"]).release
    for argv in (["claim", "dev"], ["claim", "dev", "--secret", "s", "--release"], ["claim", "--release"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2


def test_unreachable_server_on_claim():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = tbcoap(types.SimpleNamespace(url=f"http://127.0.0.1:{port}"), "claim", "d", "--secret", "s", key="k")
    assert "cannot connect" in fails(result)


# -- device profiles and provisioning --------------------------------------------------

def test_profile_create_and_list_all_types(server):
    names = {kind: unique(kind.lower()[:5]) for kind in ("DISABLED", "ALLOW_CREATE_NEW_DEVICES",
                                                          "CHECK_PRE_PROVISIONED_DEVICES")}
    out = ok(tbcoap(server, "profile", "create", names["DISABLED"]))
    assert any(line.split() == ["provision", "type:", "DISABLED"] for line in out.splitlines())
    key, secret = unique("key"), unique("secret")
    out = ok(tbcoap(server, "profile", "create", names["ALLOW_CREATE_NEW_DEVICES"], "--provision-type",
                    "allow-create-new-devices", "--provision-key", key, "--provision-secret", secret))
    assert f"provision key:    {key}" in out and f"provision secret: {secret}" in out
    raw = json.loads(ok(tbcoap(server, "--json", "profile", "create", names["CHECK_PRE_PROVISIONED_DEVICES"],
                               "--provision-type", "CHECK_PRE_PROVISIONED_DEVICES",
                               "--provision-key", key + "-2", "--secret", secret)))
    assert raw["provisionType"] == "CHECK_PRE_PROVISIONED_DEVICES" and raw["provisionDeviceKey"] == key + "-2"
    assert raw["id"]["entityType"] == "DEVICE_PROFILE"

    out = ok(tbcoap(server, "profile", "list", "--page-size", "10000"))
    assert out.splitlines()[0].split() == ["NAME", "PROVISION", "TYPE", "PROVISION", "KEY", "PAYLOAD", "ID", "CREATED"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert "default" in rows
    for kind, name in names.items():
        assert rows[name][1] == kind
    assert secret not in out  # secrets only with --json
    page = json.loads(ok(tbcoap(server, "--json", "profile", "list", "--page-size", "10000")))
    by_name = {p["name"]: p for p in page["data"]}
    assert by_name[names["ALLOW_CREATE_NEW_DEVICES"]]["provisionDeviceSecret"] == secret
    assert by_name[names["DISABLED"]]["provisionDeviceKey"] is None
    assert "page 1 of" in ok(tbcoap(server, "profile", "list", "--page-size", "1"))


def test_profile_errors(server):
    # a provisioning profile without its key and secret: refused before any call
    stderr = fails(tbcoap(server, "profile", "create", unique("p"), "--provision-type",
                          "ALLOW_CREATE_NEW_DEVICES", "--provision-key", "k"), 2)
    assert "--provision-secret" in stderr
    assert fails(tbcoap(server, "profile", "create", unique("p"), "--provision-type", "sometimes"), 2)
    # provision keys are unique: the server's 400
    key = unique("dupkey")
    ok(tbcoap(server, "profile", "create", unique("p"), "--provision-type", "ALLOW_CREATE_NEW_DEVICES",
              "--provision-key", key, "--provision-secret", "s"))
    stderr = fails(tbcoap(server, "profile", "create", unique("p"), "--provision-type", "ALLOW_CREATE_NEW_DEVICES",
                          "--provision-key", key, "--provision-secret", "s"))
    assert stderr.startswith("tbcoap: 400 ")
    _, customer_key = make_customer(server)
    assert fails(tbcoap(server, "profile", "list", key=customer_key)).startswith("tbcoap: 403 ")


def test_provision_allow_create_then_telemetry(server):
    profile, key, secret = unique("allow"), unique("pkey"), unique("psecret")
    ok(tbcoap(server, "profile", "create", profile, "--provision-type", "ALLOW_CREATE_NEW_DEVICES",
              "--provision-key", key, "--provision-secret", secret))
    name = unique("prov")
    code, answer = provision(server, deviceName=name, provisionDeviceKey=key, provisionDeviceSecret=secret)
    assert code == CREATED, (code_text(code), answer)
    assert answer["status"] == "SUCCESS" and answer["credentialsType"] == "ACCESS_TOKEN"
    token = answer["credentialsValue"]
    assert token
    assert post_telemetry(server, token, {"temperature": 21.5}) == CREATED
    device = show(server, name)
    assert device["type"] == profile
    credentials = json.loads(ok(tbcoap(server, "--json", "device", "token", name)))
    assert (credentials["credentialsType"], credentials["credentialsId"]) == ("ACCESS_TOKEN", token)
    assert "temperature" in ok(tbcoap(server, "telemetry", "latest", name))
    # the same name twice fails; a wrong secret is "not found"
    code, answer = provision(server, deviceName=name, provisionDeviceKey=key, provisionDeviceSecret=secret)
    assert (code, answer) == (BAD_REQUEST, {"errorMsg": "Failed to provision device!", "status": "FAILURE"})
    code, answer = provision(server, deviceName=unique("prov"), provisionDeviceKey=key, provisionDeviceSecret="no")
    assert (code, answer) == (BAD_REQUEST, {"errorMsg": "Provision data was not found!", "status": "NOT_FOUND"})


def test_provision_disabled_and_pre_provisioned(server):
    disabled, key = unique("off"), unique("offkey")
    ok(tbcoap(server, "profile", "create", disabled, "--provision-key", key, "--provision-secret", "s"))
    code, answer = provision(server, deviceName=unique("d"), provisionDeviceKey=key, provisionDeviceSecret="s")
    assert (code, answer["status"]) == (BAD_REQUEST, "NOT_FOUND")

    profile, key = unique("pre"), unique("prekey")
    ok(tbcoap(server, "profile", "create", profile, "--provision-type", "CHECK_PRE_PROVISIONED_DEVICES",
              "--provision-key", key, "--provision-secret", "s"))
    name, token = make_device(server, "--type", profile)
    code, answer = provision(server, deviceName=name, provisionDeviceKey=key, provisionDeviceSecret="s")
    assert code == CREATED, (code_text(code), answer)
    assert answer == {"credentialsValue": token, "credentialsType": "ACCESS_TOKEN", "status": "SUCCESS"}
    assert post_telemetry(server, token, {"x": 1}) == CREATED
    # once only; and a device that is not of this profile is refused
    code, answer = provision(server, deviceName=name, provisionDeviceKey=key, provisionDeviceSecret="s")
    assert (code, answer["status"]) == (BAD_REQUEST, "FAILURE")
    other, _ = make_device(server)
    code, answer = provision(server, deviceName=other, provisionDeviceKey=key, provisionDeviceSecret="s")
    assert (code, answer["status"]) == (BAD_REQUEST, "FAILURE")


def test_profile_usage():
    parser = build_parser()
    args = parser.parse_args(["profile", "create", "p", "--provision-type", "check-pre-provisioned-devices",
                              "--provision-key", "k", "--secret", "s"])
    assert (args.provision_type, args.provision_key, args.provision_secret) == \
        ("CHECK_PRE_PROVISIONED_DEVICES", "k", "s")
    assert parser.parse_args(["profile", "create", "p"]).provision_type == "DISABLED"
    # --key stays the global option (the admin key), not the provision key
    args = parser.parse_args(["profile", "create", "p", "--key", "admin"])
    assert args.key == "admin" and args.provision_key is None


TELEMETRY_SCHEMA = """syntax = "proto3";
package meter;
message Reading {
  optional double kwh = 1;
}
"""


def test_profile_create_with_protobuf_schemas(server, tmp_path):
    schema = tmp_path / "reading.proto"
    schema.write_text(TELEMETRY_SCHEMA)
    name = unique("pb")
    out = ok(tbcoap(server, "profile", "create", name, "--payload", "protobuf", "--telemetry-schema", str(schema)))
    assert any(line.split() == ["payload:", "PROTOBUF"] for line in out.splitlines())
    page = json.loads(ok(tbcoap(server, "--json", "profile", "list", "--page-size", "10000")))
    (profile,) = [p for p in page["data"] if p["name"] == name]
    assert profile["transportType"] == "COAP"
    payload = profile["profileData"]["transportConfiguration"]["coapDeviceTypeConfiguration"][
        "transportPayloadTypeConfiguration"]
    assert payload["deviceTelemetryProtoSchema"] == TELEMETRY_SCHEMA  # as given
    assert "message SensorConfiguration" in payload["deviceAttributesProtoSchema"]  # ThingsBoard's default
    rows = {line.split()[0]: line.split() for line in ok(tbcoap(server, "profile", "list", "--page-size",
                                                                "10000")).splitlines()[1:]}
    assert "PROTOBUF" in rows[name] and "JSON" in rows["default"]


def test_profile_payload_errors(server, tmp_path):
    bad = tmp_path / "bad.proto"
    bad.write_text('syntax = "proto3";\nmessage A {\n  int32 x = 1\n}\n')
    stderr = fails(tbcoap(server, "profile", "create", unique("pb"), "--payload", "protobuf",
                          "--rpc-request-schema", str(bad)))
    assert stderr.startswith("tbcoap: 400 ") and "deviceRpcRequestProtoSchema: 4:1: Expected" in stderr
    stderr = fails(tbcoap(server, "profile", "create", unique("pb"), "--telemetry-schema", str(bad)), 2)
    assert "--telemetry-schema needs --payload protobuf" in stderr
    stderr = fails(tbcoap(server, "profile", "create", unique("pb"), "--payload", "protobuf",
                          "--telemetry-schema", str(tmp_path / "missing.proto")), 2)
    assert "missing.proto" in stderr and "No such file" in stderr
    assert "json or protobuf" in fails(tbcoap(server, "profile", "create", unique("pb"), "--payload", "xml"), 2)


def test_power_settings_of_a_profile_and_a_device(server):
    profile, device = unique("sleepers"), unique("meter")
    ok(tbcoap(server, "profile", "create", profile))
    out = ok(tbcoap(server, "power", "profile", profile, "--mode", "psm", "--psm-activity-timer", "20000"))
    assert "powerMode:" in out and "PSM" in out and "20000" in out
    raw = json.loads(ok(tbcoap(server, "--json", "power", "profile", profile)))
    assert raw == {"powerMode": "PSM", "psmActivityTimer": 20000}
    ok(tbcoap(server, "device", "create", device, "--type", profile))
    assert json.loads(ok(tbcoap(server, "--json", "power", "device", device))) == {"type": "DEFAULT"}
    ok(tbcoap(server, "power", "device", device, "--mode", "e-drx", "--paging-window", "5000"))
    raw = json.loads(ok(tbcoap(server, "--json", "power", "device", device)))
    assert raw == {"type": "COAP", "powerMode": "E_DRX", "pagingTransmissionWindow": 5000}
    shown = json.loads(ok(tbcoap(server, "--json", "device", "show", device)))
    assert shown["type"] == profile and shown["deviceData"]["transportConfiguration"]["powerMode"] == "E_DRX"
    ok(tbcoap(server, "power", "device", device, "--mode", "none", "--paging-window", "5000"))
    raw = json.loads(ok(tbcoap(server, "--json", "power", "device", device)))
    assert raw == {"type": "COAP", "pagingTransmissionWindow": 5000}  # its profile's mode, its own timer
    bad = tbcoap(server, "power", "device", device, "--mode", "sleep")
    assert bad.returncode == 2 and "psm, drx, e_drx or none" in bad.stderr
    bad = tbcoap(server, "power", "device", device, "--edrx-cycle", "-5")
    assert bad.returncode == 2 and "positive whole number" in bad.stderr
    missing = tbcoap(server, "power", "device", unique("nobody"))
    assert missing.returncode == 1 and missing.stderr
