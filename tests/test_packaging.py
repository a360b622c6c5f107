"""Packaging: the wheel an operator installs carries the twistd plugin and the bundled plugins as
top-level packages ``tbcoap_<name>`` with their entry points, and nothing under a generic name."""

import configparser
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
    assert {"tbcoap_sqlite/store.py", "tbcoap_sqlite/schema.py", "tbcoap_echo/__init__.py",
            "tbcoap_postgres/store.py", "tbcoap_postgres/schema.py"} <= names
    assert "tbcoap/coap/messagelayer.py" in names
    assert not any("dropin.cache" in n or n.startswith(("tests/", "benchmarks/", "plugins/", "examples/"))
                   for n in names)
    assert "twisted/__init__.py" not in names and "twisted/plugins/__init__.py" not in names


def test_wheel_ships_every_console_file(wheel):
    static = ROOT / "tbcoap" / "web" / "static"
    files = {f"tbcoap/web/static/{p.relative_to(static).as_posix()}" for p in static.rglob("*") if p.is_file()}
    assert "tbcoap/web/static/index.html" in files and "tbcoap/web/static/vendor/uplot/LICENSE" in files
    assert files <= set(wheel.namelist()), sorted(files - set(wheel.namelist()))


def test_wheel_ships_every_file_of_the_bundled_plugins(wheel):
    """Files that are not Python (the Redis store's Lua scripts) are package data: each one is shipped."""
    plugins = ROOT / "plugins"
    files = {p.relative_to(plugins).as_posix() for p in plugins.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert {"tbcoap_redis/lua/prelude.lua", "tbcoap_redis/lua/save_telemetry.lua"} <= files
    assert files <= set(wheel.namelist()), sorted(files - set(wheel.namelist()))


def test_wheel_installs_no_generic_top_level_package(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"tbcoap", "tbcoap_sqlite", "tbcoap_echo", "tbcoap_redis", "tbcoap_postgres", "twisted"}


def test_wheel_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["tbcoap"]) == {"sqlite": "tbcoap_sqlite", "redis": "tbcoap_redis",
                                      "postgres": "tbcoap_postgres", "echo": "tbcoap_echo"}
    assert parser["console_scripts"]["tbcoap"] == "tbcoap.cli.main:main"


def test_every_source_package_is_listed_in_setup_cfg():
    """setup.cfg lists packages by hand (the plugins are mapped from plugins/): none may be missing."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tbcoap").rglob("__init__.py")}
    on_disk |= {p.parent.name for p in (ROOT / "plugins").glob("*/__init__.py")}
    assert on_disk | {"twisted.plugins"} == listed


def test_twistd_lists_tbcoap():
    twistd = pathlib.Path(sys.executable).parent / "twistd"
    result = subprocess.run([str(twistd), "--help"], capture_output=True, text=True, check=True)
    assert "tbcoap" in result.stdout


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    (command,) = [line.strip() for line in readme[:15] if "pytest" in line and line.startswith("    ")]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
