"""Packaging: the wheel an operator installs carries the twistd plugin, the bundled plugins and
their entry points; the editable install is a plain path entry that twistd can search."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("tbcoap-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_contents(wheel):
    names = set(wheel.namelist())
    assert "twisted/plugins/tbcoap_plugin.py" in names
    assert "plugins/tbcoap_sqlite/store.py" in names
    assert "tbcoap/coap/messagelayer.py" in names
    assert not any("dropin.cache" in n or n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "twisted/__init__.py" not in names and "twisted/plugins/__init__.py" not in names


def test_wheel_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "sqlite = plugins.tbcoap_sqlite" in text and "echo = plugins.tbcoap_echo" in text
    assert "tbcoap = tbcoap.cli.main:main" in text


def test_twistd_lists_tbcoap():
    twistd = pathlib.Path(sys.executable).parent / "twistd"
    result = subprocess.run([str(twistd), "--help"], capture_output=True, text=True, check=True)
    assert "tbcoap" in result.stdout
