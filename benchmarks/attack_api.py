"""The REST attacks of the second hardening pass, run by benchmarks/attack.py (``--only history-*``,
``backup-unread``, ``many-keys``, ``text-search``).

The attacker owns one device (claimed with a customer key, as a customer would) or holds its token.
History data is seeded through the admin's REST API before the attack starts (not timed).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

KEY = "bench-key"
BASE_TS = 1_700_000_000_000
WRITE_TIMEOUT = 5  # the node's --write-timeout in these attacks (s)
SEEDING = ["--max-request-keys", "20000"]  # the admin seeds history 20,000 points per request


def http(port, method, path, body=None, key=KEY, timeout=60):
    """``(status, parsed body)`` of one REST call."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"X-Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def seed(ctx, keys, points):
    """``points`` points of each of ``keys`` on the attacker's device, 20,000 per request."""
    for start in range(0, points, 20_000 // max(1, len(keys))):
        batch = [{"ts": BASE_TS + i * 1000, "values": {key: i for key in keys}}
                 for i in range(start, min(points, start + 20_000 // max(1, len(keys))))]
        status, _ = http(ctx.http, "POST", f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/timeseries/ANY", batch)
        assert status == 200, status


def customer_key(ctx):
    """A customer that owns the attacker's device (claimed the ThingsBoard way); its API key."""
    from attack import ATTACKER, exchange, request, udp  # noqa: E402 (the shared CoAP helpers)

    status, customer = http(ctx.http, "POST", "/api/customer", {"title": "attacker"})
    sock = udp()
    exchange(sock, ctx.coap, request(2, f"/api/v1/{ATTACKER}/claim", b'{"secretKey":"s"}', 1, b"c"))
    sock.close()
    status, _ = http(ctx.http, "POST", "/api/customer/device/attacker/claim", {"secretKey": "s"},
                     key=customer["apiKey"])
    assert status == 200, status
    return customer["apiKey"]


def series(ctx, query):
    return f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/values/timeseries?{query}"


def attack_history_keys(ctx, scale):
    """The answer that was 70 MB and stalled devices 2.3 s: 20 keys x 100,000 points without
    ``keys``; then the largest answer allowed (20 keys x 5,000 points), ten times in a row."""
    points = int(100_000 * scale)
    seed(ctx, [f"k{n}" for n in range(20)], points)
    key = customer_key(ctx)
    refused, _ = http(ctx.http, "GET", series(ctx, "startTs=0&endTs=9999999999999&limit=100000"), key=key)
    started, sizes = time.monotonic(), []
    for _ in range(10):
        status, body = http(ctx.http, "GET", series(ctx, f"startTs=0&endTs=9999999999999&limit={points // 20}"),
                            key=key)
        sizes.append(sum(len(v) for v in body.values()) if status == 200 else status)
    return {"allKeysLimit100000": refused, "answersOfTheLargestSize": sizes,
            "secondsForTen": round(time.monotonic() - started, 1)}


def _stalled(port, path, key):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Authorization: Bearer {key}\r\n\r\n".encode())
    return sock


def attack_history_unread(ctx, scale):
    """Thirty large answers asked for and never read (they cost 2.07 GB and 4.6 s stalls before):
    the node holds a piece of each, refuses what passes the open-answer caps, and ends them after
    the write timeout; the admin's own read is answered meanwhile."""
    seed(ctx, [f"k{n}" for n in range(10)], int(10_000 * scale))
    key = customer_key(ctx)
    sockets = [_stalled(ctx.http, series(ctx, "startTs=0&endTs=9999999999999&limit=10000"), key) for _ in range(30)]
    time.sleep(1)
    stats = http(ctx.http, "GET", "/api/admin/stats")[1]["history"]
    started = time.monotonic()
    admin, _ = http(ctx.http, "GET", series(ctx, "keys=k1&startTs=0&endTs=9999999999999&limit=10"))
    admin_seconds = time.monotonic() - started
    deadline = time.monotonic() + WRITE_TIMEOUT + 10
    while http(ctx.http, "GET", "/api/admin/stats")[1]["history"]["openAnswers"] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = http(ctx.http, "GET", "/api/admin/stats")[1]["history"]
    for sock in sockets:
        sock.close()
    return {"openWhileUnread": stats["openAnswers"], "refused": stats["refused"], "adminRead": admin,
            "adminSeconds": round(admin_seconds, 3), "openAfterWriteTimeout": left["openAnswers"]}


attack_history_unread.args = ["--write-timeout", str(WRITE_TIMEOUT), *SEEDING]


attack_history_keys.args = SEEDING


def attack_history_shutout(ctx, scale):
    """Forty threads of a customer's year-long aggregations, back to back, while the admin reads
    ten points every 200 ms (the admin waited 29-84 s or got 503 before)."""
    seed(ctx, ["t"], int(200_000 * scale))
    key = customer_key(ctx)
    stop, customer_codes, admin_times, admin_codes = False, {}, [], {}

    def greedy():
        while not stop:
            status, _ = http(ctx.http, "GET", series(ctx, f"keys=t&startTs={BASE_TS}&endTs={BASE_TS + 31_536_000_000}"
                                                          "&interval=3600000&agg=AVG&limit=10000"), key=key)
            customer_codes[status] = customer_codes.get(status, 0) + 1

    threads = [threading.Thread(target=greedy, daemon=True) for _ in range(40)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20 * max(scale, 0.25)
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, _ = http(ctx.http, "GET", series(ctx, "keys=t&startTs=0&endTs=9999999999999&limit=10"))
        admin_times.append(time.monotonic() - started)
        admin_codes[status] = admin_codes.get(status, 0) + 1
        time.sleep(0.2)
    stop = True
    for thread in threads:
        thread.join(60)
    admin_times.sort()
    return {"customerAnswers": customer_codes, "adminAnswers": admin_codes,
            "adminWorstSeconds": round(admin_times[-1], 3), "adminMedianSeconds": round(admin_times[len(admin_times) // 2], 3)}


attack_history_shutout.args = SEEDING


def attack_backup_unread(ctx, scale):
    """A backup asked for and never read: its slot and its snapshot file are freed after the write
    timeout (before, 200 s of 503 for every other backup, and the file stayed)."""
    import os

    seed(ctx, [f"k{n}" for n in range(10)], int(30_000 * scale))
    sock = _stalled(ctx.http, "/api/admin/backup", KEY)
    time.sleep(1)
    refused = http(ctx.http, "GET", "/api/admin/backup")[0]
    started = time.monotonic()
    while time.monotonic() - started < WRITE_TIMEOUT + 20:
        time.sleep(0.5)
        snapshots = [n for n in os.listdir(ctx.workdir) if n.startswith(".backup-")]
        if not snapshots:
            break
    sock.close()
    return {"secondBackupWhileHeld": refused, "slotFreedAfterSeconds": round(time.monotonic() - started, 1),
            "snapshotFilesLeft": len([n for n in os.listdir(ctx.workdir) if n.startswith(".backup-")])}


attack_backup_unread.args = ["--write-timeout", str(WRITE_TIMEOUT), *SEEDING]


def attack_many_keys(ctx, scale):
    """A device writing 100,000 distinct telemetry keys and 100,000 attribute keys with its token
    (1,000 keys per request): the per-device key caps stop it."""
    from attack import ATTACKER, exchange, request, udp  # noqa: E402

    sock, answers = udp(), {}
    for n in range(int(100 * scale)):
        for step, feature in enumerate(("telemetry", "attributes")):
            body = json.dumps({f"{feature[0]}{n}-{i}": i for i in range(1000)}).encode()
            mid = (2 * n + step) & 0xFFFF  # a new Message ID each (the same one would be a duplicate)
            answer, _ = exchange(sock, ctx.coap, request(2, f"/api/v1/{ATTACKER}/{feature}", body, mid, b"k"),
                                 timeout=5)
            answers.setdefault(feature, {}).setdefault(answer, 0)
            answers[feature][answer] += 1
    sock.close()
    keys = http(ctx.http, "GET", f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/keys/timeseries")[1]
    attributes = http(ctx.http, "GET", f"/api/plugins/telemetry/DEVICE/{ctx.attacker}/keys/attributes")[1]
    return {"answers": {f: {str(k): v for k, v in a.items()} for f, a in answers.items()},
            "telemetryKeysKept": len(keys), "attributeKeysKept": len(attributes)}


def attack_text_search(ctx, scale):
    """``textSearch=%00`` matched every device before; now 400."""
    status, body = http(ctx.http, "GET", "/api/tenant/devices?pageSize=10&page=0&textSearch=%00")
    return {"status": status, "message": (body or {}).get("message")}


ATTACKS = {"history-keys": attack_history_keys, "history-unread": attack_history_unread,
           "history-shutout": attack_history_shutout, "backup-unread": attack_backup_unread,
           "many-keys": attack_many_keys, "text-search": attack_text_search}
