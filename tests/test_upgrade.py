"""A data directory written by an earlier tbcoap starts unchanged under this one.

``tests/data/datadir-0.1.0`` was made by tbcoap 0.1.0, when the bundled plugins were still
installed as ``plugins.tbcoap_*`` and the schema had three steps (its README lists what it holds).
"""

import json
import shutil
import sqlite3
from pathlib import Path

from tbcoap_sqlite import schema
from tests.blocking import Coap, rest
from tests.coapclient import POST

OLD = Path(__file__).parent / "data" / "datadir-0.1.0"
DEVICE = "d3a7eb5b-ab01-4f4b-a43f-5a9c2e82697c"
CUSTOMER = "57952be2-c07e-4c73-933b-7eb7270b49f5"
RPC = "9a57f9c5-1611-4fb5-9a96-8323180e8d6a"
CREATED = 65


def test_a_0_1_0_data_directory_starts_unchanged(twistd, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(OLD, data)
    server = twistd(data_dir=data)
    base = server.http_url

    status, device = rest(base, "GET", f"/api/device/{DEVICE}")
    assert status == 200 and device["name"] == "old-device" and device["type"] == "sensors"
    assert device["customerId"]["id"] == CUSTOMER
    status, history = rest(base, "GET", f"/api/plugins/telemetry/DEVICE/{DEVICE}/values/timeseries"
                                        "?keys=temperature&startTs=0&endTs=2000000000000&orderBy=ASC")
    assert history == {"temperature": [{"ts": 1700000000000, "value": "21.5"},
                                       {"ts": 1700000060000, "value": "22.0"}]}
    status, shared = rest(base, "GET", f"/api/plugins/telemetry/DEVICE/{DEVICE}/values/attributes/SHARED_SCOPE")
    assert [(a["key"], a["value"]) for a in shared] == [("target", 20.5)]
    status, rpc = rest(base, "GET", f"/api/rpc/persistent/{RPC}")
    assert status == 200 and rpc["request"]["method"] == "setGpio" and rpc["status"] == "QUEUED"
    # the old customer key still works, and the old token still posts
    key = (OLD / "customer.key").read_text().strip()
    assert rest(base, "GET", f"/api/device/{DEVICE}", key=key)[0] == 200
    client = Coap(server.coap_address)
    try:
        assert client.request(POST, "/api/v1/OLD-TOKEN/telemetry", json.dumps({"after": 1})) == CREATED
    finally:
        client.close()
    status, latest = rest(base, "GET", f"/api/plugins/telemetry/DEVICE/{DEVICE}/values/timeseries?keys=after")
    assert latest["after"][0]["value"] == "1"
    server.stop()
    # the schema gained today's steps
    conn = sqlite3.connect(data / "tbcoap.sqlite3")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION > 3
    finally:
        conn.close()
