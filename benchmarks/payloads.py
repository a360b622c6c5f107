"""Telemetry in JSON, Protobuf and CBOR side by side on one node: the same readings, the full durable
path (token, the device's profile, decoding and typing, SQLite commit before each 2.01).

    .venv/bin/python benchmarks/payloads.py                  # 3 rounds of 8 s per format
    .venv/bin/python benchmarks/payloads.py --rounds 5 --seconds 10

Three devices of one node: one of a JSON profile posting JSON (no Content-Format), one of the same
profile posting CBOR (Content-Format 60), one of a PROTOBUF profile posting its schema's message.
The formats take turns within each round (the order rotates), so none always runs first on this
shared, noisy machine.  Besides msgs/s (which other processes on the machine disturb most), each run
reports the server's CPU time per answered message (``/proc/PID/stat``), the steadier figure of
what a format costs the hot path.  Then the decoding and typing alone (``parse_telemetry`` with
each reader, in this process, CPU time).  Prints every run, the medians and the ratios to JSON.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time

import cbor2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import loadgen  # noqa: E402
import run as bench  # noqa: E402

SCHEMA = """syntax = "proto3";
package bench;
message Reading {
  optional double temperature = 1;
  optional double humidity = 2;
  optional bool ok = 3;
}
"""
PROFILE = {"name": "bench-protobuf", "transportType": "COAP", "profileData": {"transportConfiguration": {
    "type": "COAP", "coapDeviceTypeConfiguration": {"transportPayloadTypeConfiguration": {
        "transportPayloadType": "PROTOBUF", "deviceTelemetryProtoSchema": SCHEMA}}}}}
TOKENS = {"JSON": "BENCH_JSON", "CBOR": "BENCH_CBOR", "Protobuf": "BENCH_PROTOBUF"}
CONTENT_FORMATS = {"JSON": None, "CBOR": 60, "Protobuf": 42}


def reading_message():
    """The Reading class of SCHEMA, compiled by protoc."""
    from tbcoap.payloads.protoc import compile_file

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.proto")
        with open(path, "w") as f:
            f.write(SCHEMA)
        return compile_file(path).message


def readings():
    """100 readings of each format, the same values (humidity varies)."""
    message = reading_message()
    values = [{"temperature": 21.5, "humidity": 40.0 + i, "ok": True} for i in range(100)]
    return {"JSON": [b'{"temperature":21.5,"humidity":%.1f,"ok":true}' % v["humidity"] for v in values],
            "CBOR": [cbor2.dumps(v) for v in values],
            "Protobuf": [message(**v).SerializeToString() for v in values]}


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decoding(bodies, number=20000):
    """Microseconds of CPU per body of decoding and typing alone, per format (best of 7)."""
    from tbcoap.deviceapi.formats import CBOR_IN_JSON, JSON_IN_JSON
    from tbcoap.payloads.protojson import MessageReader
    from tbcoap.services.values import parse_telemetry

    readers = {"JSON": JSON_IN_JSON.telemetry, "CBOR": CBOR_IN_JSON.telemetry,
               "Protobuf": MessageReader(reading_message())}
    out = {}
    for name, read in readers.items():
        body = bodies[name][7]
        assert parse_telemetry(body, 0, read=read) == parse_telemetry(bodies["JSON"][7], 0)
        best = float("inf")
        for _ in range(7):
            started = time.process_time()
            for _ in range(number):
                parse_telemetry(body, 0, read=read)
            best = min(best, time.process_time() - started)
        out[name] = best / number * 1e6
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each run (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--ports", type=int, default=256)
    args = parser.parse_args()
    bodies = readings()
    runs = {name: [] for name in TOKENS}
    with tempfile.TemporaryDirectory() as workdir:
        proc, port, http = bench.start_tbcoap(workdir, [], create=False)
        try:
            bench.rest(http, "POST", "/api/deviceProfile", PROFILE)
            for name, token in TOKENS.items():
                kind = "bench-protobuf" if name == "Protobuf" else "default"
                bench.rest(http, "POST", f"/api/device?accessToken={token}", {"name": f"bench-{name}", "type": kind})
            names = list(TOKENS)
            for name in names:  # warm-up: the profile is looked up (and compiled) once
                loadgen.run(("127.0.0.1", port), f"/api/v1/{TOKENS[name]}/telemetry",
                            lambda i, b=bodies[name]: b[i % 100],
                            seconds=1.0, inflight=args.inflight, ports=args.ports,
                            content_format=CONTENT_FORMATS[name])
            for round_ in range(args.rounds):
                order = names[round_ % 3:] + names[:round_ % 3]
                for name in order:
                    cpu_before = cpu_seconds(proc.pid)
                    result = loadgen.run(("127.0.0.1", port), f"/api/v1/{TOKENS[name]}/telemetry",
                                         lambda i, b=bodies[name]: b[i % 100], seconds=args.seconds,
                                         inflight=args.inflight, ports=args.ports,
                                         content_format=CONTENT_FORMATS[name])
                    result.cpu_us = (cpu_seconds(proc.pid) - cpu_before) / max(result.answered, 1) * 1e6
                    runs[name].append(result)
                    print(f"round {round_ + 1} {name:9} {result.rate:8.0f} msgs/s  p50 {result.p50:6.2f} ms  "
                          f"p99 {result.p99:6.2f} ms  server CPU {result.cpu_us:6.1f} µs/msg  errors {result.errors}"
                          f"  lost {result.lost}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(f"\n{args.inflight} CON telemetry POSTs in flight, {args.rounds} rounds of {args.seconds:g} s per format\n")
    print(f"{'format':10} {'bytes':>6} {'msgs/s':>8} {'vs JSON':>8} {'p50 ms':>7} {'p99 ms':>7}"
          f" {'CPU µs/msg':>11} {'vs JSON':>8}")
    base = statistics.median(r.rate for r in runs["JSON"])
    base_cpu = statistics.median(r.cpu_us for r in runs["JSON"])
    for name, results in runs.items():
        rate, cpu = statistics.median(r.rate for r in results), statistics.median(r.cpu_us for r in results)
        print(f"{name:10} {len(bodies[name][7]):6} {rate:8.0f} {rate / base:8.2f}"
              f" {statistics.median(r.p50 for r in results):7.2f} {statistics.median(r.p99 for r in results):7.2f}"
              f" {cpu:11.1f} {cpu / base_cpu:8.2f}")
    micro = decoding(bodies)
    print("\ndecoding and typing alone (parse_telemetry with each reader), µs per body:")
    for name, us in micro.items():
        print(f"  {name:10} {us:6.2f}  ({us / micro['JSON']:.2f}x JSON)")


if __name__ == "__main__":
    main()
