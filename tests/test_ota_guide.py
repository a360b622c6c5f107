"""docs/ota.md works as written: its tbcoap, dd, coap-client-notls and sha256sum commands, run as they
stand (only the server's port, URL and admin key and the package's id put in)."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

from tests.conftest import ADMIN_KEY, require_tool

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "ota.md"
BIN = os.path.dirname(sys.executable)


def commands():
    text = GUIDE.read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                out.append(shlex.split(command))
    return out


def run(command, cwd):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


def test_the_guide_as_written(launch, tmp_path):
    client = require_tool("coap-client-notls", "install Debian's libcoap3-bin (apt-get install libcoap3-bin)")
    steps = commands()
    assert [c[0] for c in steps] == ["tbcoap", "tbcoap", "dd", "tbcoap", "tbcoap", "coap-client-notls",
                                     "sha256sum", "coap-client-notls", "tbcoap"]
    node = launch()
    port = re.findall(r"CoAP listening on udp \S+:(\d+)", node.read_log())[-1]
    package_id = None

    def real(command):
        if command[0] == "tbcoap":
            command = [os.path.join(BIN, "tbcoap"), "--url", node.url, "--key", ADMIN_KEY, *command[1:]]
        elif command[0] == "coap-client-notls":
            command = [client, *command[1:]]
        return [part.replace("coap://127.0.0.1/", f"coap://127.0.0.1:{port}/").replace("PACKAGE_ID", package_id or "")
                for part in command]

    outputs = []
    for command in steps:
        out = run(real(command), tmp_path)
        outputs.append(out)
        if command[:3] == ["tbcoap", "ota", "upload"]:
            package_id = re.search(r"^id:\s+(\S+)$", out, re.M).group(1)
    sums = dict(reversed(line.split()) for line in outputs[6].splitlines())
    assert sums["fw.bin"] == sums["fw-downloaded.bin"]
    assert (tmp_path / "fw-downloaded.bin").stat().st_size == 300_000
    assert re.search(r"^thermostat-1\s+DOWNLOADED", outputs[8], re.M), outputs[8]
