"""CoAPS: the device API over DTLS 1.2 with tokens and with X.509 device certificates, against a
``twistd -n tbcoap`` process, driven by a pyOpenSSL client and by raw datagrams (spoofed hellos,
forged cookies, plaintext)."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid

import pytest
from OpenSSL import SSL

from tests.blocking import Coap, rest
from tests.certs import make_ca, make_cert
from tests.conftest import ADMIN_KEY, LOOPBACK_PORTS, Server
from tests.dtlsclient import DtlsCoap

GET, POST = 1, 2
CREATED, CONTENT, UNAUTHORIZED, NOT_ACCEPTABLE = 0x41, 0x45, 0x81, 0x86
ACCEPT = 17


def client_connection():
    conn = SSL.Connection(SSL.Context(SSL.DTLS_CLIENT_METHOD), None)
    conn.set_connect_state()
    return conn


def client_hello(conn=None):
    """The first flight of a DTLS client (a ClientHello without a cookie: what a spoofer sends)."""
    conn = conn or client_connection()
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    return conn.bio_read(65536)


class DtlsServer:
    """A twistd node serving CoAPS with a server certificate signed by ``ca``."""

    def __init__(self, folder, *args):
        self.ca = make_ca()
        cert, key = make_cert(self.ca, "localhost", dns=["localhost"], ips=["127.0.0.1"]).write(folder, "server")
        (folder / "ca.pem").write_bytes(self.ca.cert_pem)
        self.ca_file = str(folder / "ca.pem")
        self.process = Server(folder / "data", *LOOPBACK_PORTS, "--admin-key", ADMIN_KEY, "--dtls-cert", cert,
                              "--dtls-key", key, "--coaps-port", "0", "--coaps-interface", "127.0.0.1", *args)
        self.process.start()
        self.coaps = ("127.0.0.1", int(re.findall(r"CoAPS listening on udp \S+:(\d+)", self.process.read_log())[-1]))
        self.url = self.process.http_url

    def rest(self, method, path, body=None):
        return rest(self.url, method, path, body)

    def device(self, token=None):
        """A new device: ``(device JSON, token)``."""
        token = token or f"T{uuid.uuid4().hex[:12]}"
        status, device = self.rest("POST", f"/api/device?accessToken={token}", {"name": f"dev-{uuid.uuid4().hex[:8]}"})
        assert status == 200, device
        return device, token

    def certificate_device(self, folder, name="device", **kwargs):
        """A new device whose credential is a fresh self-signed certificate: ``(device, cert, key)``."""
        device, _ = self.device()
        issued = make_cert(kwargs.pop("ca", None), name, client=True, **kwargs)
        status, body = self.rest("POST", "/api/device/credentials", {
            "deviceId": device["id"], "credentialsType": "X509_CERTIFICATE", "credentialsValue": issued.cert_pem.decode()})
        assert status == 200, body
        cert, key = issued.write(folder, f"{name}-{uuid.uuid4().hex[:6]}")
        return device, cert, key

    def latest(self, device):
        status, body = self.rest("GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                        "?useStrictDataTypes=true")
        assert status == 200
        return {key: points[0]["value"] for key, points in body.items()}

    def dtls_stats(self):
        return self.rest("GET", "/api/admin/stats")[1]["dtls"]

    def stop(self):
        self.process.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    node = DtlsServer(tmp_path_factory.mktemp("dtls"))
    yield node
    node.stop()


@pytest.fixture
def clients():
    opened = []

    def open_client(address, **kwargs):
        client = DtlsCoap(address, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


# -- tokens over one-way DTLS -------------------------------------------------------------

def test_token_over_dtls(server, clients):
    device, token = server.device()
    client = clients(server.coaps, ca=server.ca_file)  # the client checks the server's certificate
    assert client.request(POST, f"/api/v1/{token}/telemetry", b'{"t":21.5}') == CREATED
    assert server.latest(device) == {"t": 21.5}
    code, body = client.exchange(POST, f"/api/v1/{token}/rpc", b'{"method":"echo"}')
    assert code == CONTENT and json.loads(body) == {"method": "echo"}
    assert client.request(POST, "/api/v1/not-a-token/telemetry", b'{"t":1}') == UNAUTHORIZED
    code, body = client.exchange(POST, "/api/v1/telemetry", b'{"t":1}')  # no certificate: no tokenless path
    assert code == UNAUTHORIZED and b"certificate" in body


def test_plain_coap_keeps_working_beside(server):
    device, token = server.device()
    plain = Coap(("127.0.0.1", server.process.coap_port))
    try:
        assert plain.request(POST, f"/api/v1/{token}/telemetry", b'{"p":1}') == CREATED
        assert plain.request(POST, "/api/v1/telemetry", b'{"p":1}') == UNAUTHORIZED
    finally:
        plain.close()
    assert server.latest(device) == {"p": 1}


# -- X.509 device credentials ---------------------------------------------------------------

def test_certificate_device_on_tokenless_paths(server, clients, tmp_path):
    device, cert, key = server.certificate_device(tmp_path)
    client = clients(server.coaps, cert=cert, key=key)
    assert client.request(POST, "/api/v1/telemetry", b'{"temperature":20}') == CREATED
    assert client.request(POST, "/api/v1/attributes", b'{"fw":"v2"}') == CREATED
    assert client.request(POST, "/api/v1/claim", b'{"secretKey":"s"}') == CREATED
    code, body = client.exchange(POST, "/api/v1/rpc", b'{"method":"ping"}')
    assert code == CONTENT and json.loads(body) == {"method": "ping"}
    assert server.latest(device) == {"temperature": 20}
    status, attributes = server.rest("GET", f"/api/plugins/telemetry/DEVICE/{device['id']['id']}"
                                            "/values/attributes/CLIENT_SCOPE")
    assert [(a["key"], a["value"]) for a in attributes] == [("fw", "v2")]


def test_accept_is_judged_alike_on_tokenless_and_token_paths(server, clients, tmp_path):
    """Accept matters only where the answer has a body: a tokenless telemetry POST with Accept 0
    is 2.01 as the token form is, and a tokenless client RPC asking for text is 4.06 as the token
    form is (the path is read once, whatever its shape)."""
    device, cert, key = server.certificate_device(tmp_path)
    _, token = server.device()
    client = clients(server.coaps, cert=cert, key=key)
    accept_text = [(ACCEPT, b"")]  # Accept: 0 (text/plain), an empty uint
    for path in ("/api/v1/telemetry", f"/api/v1/{token}/telemetry"):
        assert client.request(POST, path, b'{"a":1}', options=accept_text) == CREATED, path
    for path in ("/api/v1/rpc", f"/api/v1/{token}/rpc"):
        assert client.request(POST, path, b'{"method":"m"}', options=accept_text) == NOT_ACCEPTABLE, path
    assert server.latest(device) == {"a": 1}


def test_certificate_wins_over_a_token_in_the_path(server, clients, tmp_path):
    device, cert, key = server.certificate_device(tmp_path)
    other, other_token = server.device()
    client = clients(server.coaps, cert=cert, key=key)
    assert client.request(POST, f"/api/v1/{other_token}/telemetry", b'{"w":1}') == CREATED
    assert server.latest(device) == {"w": 1} and server.latest(other) == {}


def test_unknown_certificate_falls_back_to_the_token(server, clients, tmp_path):
    device, token = server.device()
    cert, key = make_cert(None, "nobody", client=True).write(tmp_path, "nobody")
    client = clients(server.coaps, cert=cert, key=key)
    assert client.request(POST, f"/api/v1/{token}/telemetry", b'{"f":1}') == CREATED
    assert server.latest(device) == {"f": 1}
    assert client.request(POST, "/api/v1/telemetry", b'{"f":2}') == UNAUTHORIZED


def test_certificate_credentials_over_rest(server, tmp_path):
    device, token = server.device()
    issued = make_cert(None, "rest-device", client=True)
    body = {"deviceId": device["id"], "credentialsType": "X509_CERTIFICATE",
            "credentialsValue": issued.cert_pem.decode()}
    status, answer = server.rest("POST", "/api/device/credentials", body)
    assert status == 200 and answer["credentialsType"] == "X509_CERTIFICATE"
    assert re.fullmatch(r"[0-9a-f]{64}", answer["credentialsId"])
    status, read = server.rest("GET", f"/api/device/{device['id']['id']}/credentials")
    assert read == answer and read["credentialsValue"].startswith("-----BEGIN CERTIFICATE-----")
    plain = Coap(("127.0.0.1", server.process.coap_port))
    try:  # the token is gone, and the digest is no token
        assert plain.request(POST, f"/api/v1/{token}/telemetry", b'{"t":1}') == UNAUTHORIZED
        assert plain.request(POST, f"/api/v1/{answer['credentialsId']}/telemetry", b'{"t":1}') == UNAUTHORIZED
    finally:
        plain.close()
    for bad in ("not a pem", issued.cert_pem.decode() * 2, "", None):
        status, error = server.rest("POST", "/api/device/credentials", {**body, "credentialsValue": bad})
        assert status == 400 and error["message"], bad
    other, _ = server.device()
    status, error = server.rest("POST", "/api/device/credentials", {**body, "deviceId": other["id"]})
    assert status == 400  # one certificate, one device
    status, error = server.rest("POST", "/api/device/credentials", {**body, "credentialsType": "MQTT_BASIC"})
    assert status == 400


def test_expired_certificate_fails_the_handshake(server, tmp_path):
    _, cert, key = server.certificate_device(tmp_path, expired=True)
    before = server.dtls_stats().get("failedHandshakes", 0)
    with pytest.raises((SSL.Error, TimeoutError)):
        DtlsCoap(server.coaps, cert=cert, key=key)
    assert server.dtls_stats().get("failedHandshakes", 0) == before + 1


# -- hostile datagrams ------------------------------------------------------------------------

def raw_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    return sock


def test_a_hello_without_cookie_gets_a_small_answer_and_no_state(server):
    before = server.dtls_stats()
    sockets = [raw_socket() for _ in range(50)]
    hellos = [client_hello() for _ in sockets]
    try:
        for sock, hello in zip(sockets, hellos):
            sock.sendto(hello, server.coaps)
        answers = [sock.recvfrom(2048)[0] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert all(a[0] == 22 and a[13] == 3 for a in answers)  # handshake records: HelloVerifyRequest
    assert max(len(a) for a in answers) < min(len(h) for h in hellos)  # smaller than the hello
    after = server.dtls_stats()
    assert after["sessions"] == before["sessions"]
    assert after["helloVerifyRequests"] - before.get("helloVerifyRequests", 0) == 50


def test_a_cookie_made_for_another_address_is_rejected(server):
    conn = client_connection()
    first, second = raw_socket(), raw_socket()
    before = server.dtls_stats()
    try:
        first.sendto(client_hello(conn), server.coaps)
        conn.bio_write(first.recvfrom(2048)[0])  # the cookie for the first socket's address
        second.sendto(client_hello(conn), server.coaps)  # ... sent from another one
        second.recvfrom(2048)  # a new HelloVerifyRequest
    finally:
        first.close()
        second.close()
    after = server.dtls_stats()
    assert after.get("cookieRejections", 0) == before.get("cookieRejections", 0) + 1
    assert after["sessions"] == before["sessions"]


def test_plaintext_on_the_coaps_port_is_dropped(server):
    _, token = server.device()
    plain = Coap(server.coaps)
    before = server.dtls_stats().get("dropped", 0)
    try:
        plain.send(POST, f"/api/v1/{token}/telemetry", b'{"t":1}')
        assert plain.receive(1.0) is None
    finally:
        plain.close()
    assert server.dtls_stats()["dropped"] == before + 1


def test_closing_a_session_ends_its_observations(server, clients):
    _, token = server.device()
    client = clients(server.coaps)
    client.sock.sendto(_observe(f"/api/v1/{token}/attributes"), server.coaps)
    _, code, _, _, _ = client.receive(5)
    assert code == CONTENT
    observing = server.rest("GET", "/api/admin/stats")[1]["observers"]["attributeObservations"]
    client.close()
    deadline = time.monotonic() + 5
    while server.rest("GET", "/api/admin/stats")[1]["observers"]["attributeObservations"] >= observing:
        assert time.monotonic() < deadline, "the observation outlived its session"
        time.sleep(0.05)


def _observe(path):
    from tests.coapclient import build

    return build(GET, path, mid=99, token=b"ob", observe=0)


# -- limits -----------------------------------------------------------------------------------

def test_the_least_recently_active_session_goes_first_when_full(tmp_path):
    node = DtlsServer(tmp_path, "--dtls-max-sessions", "3")
    sessions = []
    try:
        _, token = node.device()
        sessions = [DtlsCoap(node.coaps) for _ in range(3)]
        for client in sessions[1:]:
            assert client.request(POST, f"/api/v1/{token}/telemetry", b'{"t":1}') == CREATED
        sessions.append(DtlsCoap(node.coaps))  # the first, idle longest, makes room
        stats = node.dtls_stats()
        assert stats["sessions"] == 3 and stats["evicted"] == 1
        assert sessions[3].request(POST, f"/api/v1/{token}/telemetry", b'{"t":2}') == CREATED
        with pytest.raises(ConnectionResetError):  # it was told: a close_notify alert
            sessions[0].receive(1.0)
    finally:
        for client in sessions:
            client.close()
        node.stop()


def test_a_lost_flight_is_sent_again(server):
    """The server's flight after the cookie, never acknowledged, comes again by OpenSSL's DTLS timer."""
    conn = client_connection()
    sock = raw_socket()
    try:
        sock.sendto(client_hello(conn), server.coaps)
        conn.bio_write(sock.recvfrom(2048)[0])
        sock.sendto(client_hello(conn), server.coaps)  # with the cookie: the server answers its flight
        flights, started = [], time.monotonic()
        while time.monotonic() - started < 3.5:
            try:
                data, _ = sock.recvfrom(4096)
            except socket.timeout:
                break
            flights.append((round(time.monotonic() - started, 1), data[13] if len(data) > 13 else None))
    finally:
        sock.close()
    server_hellos = [at for at, kind in flights if kind == 2]  # ServerHello starts each flight
    assert len(server_hellos) >= 2 and server_hellos[1] >= 0.5, flights


def test_dtls_options_that_cannot_work_stop_the_start(tmp_path):
    import subprocess

    from tests.conftest import TWISTD

    cert, key = make_cert(None, "localhost").write(tmp_path, "server")
    other_cert, other_key = make_cert(None, "other").write(tmp_path, "other")
    for args, message in ((["--dtls-cert", cert], "--dtls-cert and --dtls-key go together"),
                          (["--dtls-ca", cert], "--dtls-ca needs --dtls-cert and --dtls-key"),
                          (["--dtls-cert", str(tmp_path / "nope.pem"), "--dtls-key", key], "No such file"),
                          (["--dtls-cert", cert, "--dtls-key", other_key], "--dtls-key"),
                          (["--dtls-cert", key, "--dtls-key", key], "--dtls-cert"),
                          (["--dtls-cert", cert, "--dtls-key", key, "--dtls-max-sessions", "0"], "positive")):
        done = subprocess.run([TWISTD, "-n", "--pidfile=", "tbcoap", "--data-dir", str(tmp_path / "data"), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- counters, restarts ---------------------------------------------------------------------------

def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_dtls_counter_is_listed_from_the_start(tmp_path):
    from tbcoap.coap.dtls import COUNTERS

    node = DtlsServer(tmp_path)
    try:
        stats = node.dtls_stats()
        assert {name: stats.get(name) for name in COUNTERS} == dict.fromkeys(COUNTERS, 0)
        assert stats["sessions"] == stats["handshaking"] == 0
        status, text = node.rest("GET", "/metrics")
        assert status == 200
        text = text.decode()
        for name in COUNTERS:
            family, _, reason = name.partition(".")
            snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), family)
            line = f'tbcoap_dtls_{snake}_total{{reason="{reason}"}} 0.0' if reason else f"tbcoap_dtls_{snake}_total 0.0"
            assert line in text, line
    finally:
        node.stop()


def test_a_device_restarted_without_close_notify_reconnects_at_once(server):
    """A device posts from a fixed port, loses power (no close_notify) and handshakes again from the
    same port: the new session replaces the old one at once (RFC 6347 §4.2.8)."""
    device, token = server.device()
    port = free_udp_port()
    first = DtlsCoap(server.coaps, port=port)
    assert first.request(POST, f"/api/v1/{token}/telemetry", b'{"boot":1}') == CREATED
    first.sock.drop()
    before = server.dtls_stats()["restarts"]
    started = time.monotonic()
    again = DtlsCoap(server.coaps, port=port)
    try:
        assert again.request(POST, f"/api/v1/{token}/telemetry", b'{"boot":2}') == CREATED
        assert time.monotonic() - started < 5
    finally:
        again.close()
    assert server.latest(device) == {"boot": 2} and server.dtls_stats()["restarts"] == before + 1


def test_libcoap_restarted_on_a_fixed_port_reconnects_at_once(server):
    """libcoap's client observing from a fixed port (-p) is killed (no close_notify), then posts from
    the same port: its new handshake completes and replaces the old session."""
    import subprocess

    from tests.conftest import require_tool

    binary = require_tool("coap-client-openssl", "install Debian's libcoap3-bin (apt-get install libcoap3-bin)")
    device, token = server.device()
    port, base = free_udp_port(), f"coaps://127.0.0.1:{server.coaps[1]}/api/v1/{token}"
    observing = server.rest("GET", "/api/admin/stats")[1]["observers"]["attributeObservations"]
    watcher = subprocess.Popen([binary, "-p", str(port), "-s", "60", "-m", "get", f"{base}/attributes"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while server.rest("GET", "/api/admin/stats")[1]["observers"]["attributeObservations"] <= observing:
            assert time.monotonic() < deadline and watcher.poll() is None, "libcoap never observed"
            time.sleep(0.05)
    finally:
        watcher.kill()  # SIGKILL: the session is left as it was
        watcher.wait()
    before = server.dtls_stats()["restarts"]
    started = time.monotonic()
    done = subprocess.run([binary, "-p", str(port), "-B", "10", "-m", "post", "-e", '{"restarted":true}',
                           f"{base}/telemetry"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert time.monotonic() - started < 5
    assert server.latest(device) == {"restarted": True} and server.dtls_stats()["restarts"] == before + 1
