"""docs/plugins.md works as written: its example plugin installs from the page's own files, loads
with its settings, answers, counts, and its testing recipes run (also from outside the repository)."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from tests.blocking import Coap, rest
from tests.coapclient import POST
from tests.conftest import ADMIN_KEY, TwistdProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "plugins.md").read_text()
CONTENT = 69


def block_after(marker, language):
    """The first ```language block after the line containing ``marker``."""
    rest_of_page = GUIDE[GUIDE.index(marker):]
    return re.search(rf"```{language}\n(.*?)```", rest_of_page, re.S).group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The guide's plugin, built from its pyproject.toml and installed into a folder of its own."""
    project = tmp_path_factory.mktemp("tbcoap-hello")
    (project / "tbcoap_hello").mkdir()
    plugin_source = block_after("`tbcoap-hello/tbcoap_hello/__init__.py`:", "python")
    (project / "tbcoap_hello" / "__init__.py").write_text(plugin_source)
    (project / "pyproject.toml").write_text(block_after("`tbcoap-hello/pyproject.toml`:", "toml"))
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(site), str(project)], check=True, capture_output=True)
    return site


def test_the_guide_plugin_installs_loads_and_answers(installed, tmp_path):
    env = {"PYTHONPATH": str(installed)}
    server = TwistdProcess(str(tmp_path / "data"), "--rules", "hello,echo", "--plugin-option", "hello.greeting=Hi",
                           env=env).start()
    try:
        log = server.read_log()
        assert "using store sqlite (plugin sqlite), rules hello, echo, auth tbcoap.builtins" in log
        assert "hello rule ready, greeting 'Hi'" in log
        cli = subprocess.run([sys.executable, "-m", "tbcoap.cli", "--url", server.url, "--key", ADMIN_KEY, "plugins"],
                             capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
        hello = [line.split() for line in cli.stdout.splitlines() if line.startswith("hello ")]
        assert hello and hello[0][1:4] == ["0.1.0", "yes", "entrypoint:tbcoap-hello"], cli.stdout
        status, device = rest(server.url, "POST", "/api/device?accessToken=HELLO-TOKEN", {"name": "thermostat-1"})
        assert status == 200
        client = Coap(server.coap_address)
        try:
            code, payload = client.exchange(POST, "/api/v1/HELLO-TOKEN/rpc", b'{"method":"hello"}')
        finally:
            client.close()
        assert code == CONTENT and json.loads(payload) == {"greeting": "Hi, thermostat-1"}
        status, stats = rest(server.url, "GET", "/api/admin/stats")
        assert stats["plugins"]["hello"] == {"answered": 1}
    finally:
        server.stop()


def test_the_guide_plugin_refuses_a_bad_setting(installed, tmp_path):
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=", "tbcoap",
                             "--data-dir", str(tmp_path), "--plugin-option", "hello.greeting= "],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(installed)},
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "twistd tbcoap: --plugin-option hello.greeting: the greeting must not be empty "
        "(twistd tbcoap --help lists every option)"]


def test_the_guide_testing_recipe_runs(installed, tmp_path):
    (tmp_path / "test_hello.py").write_text(block_after("## Testing a plugin", "python"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hello.py"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(installed)})
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_the_store_contract_suite_runs_from_outside_the_repository(tmp_path):
    """The guide's recipe with the bundled SQLite store standing in for a new backend."""
    recipe = block_after("**A new store backend**", "python")
    recipe = recipe.replace("from tbcoap_mystore import MyStore", textwrap.dedent("""\
        import os

        from tbcoap_sqlite.store import SQLiteStore


        def MyStore(folder):  # the SQLite store makes no folders: this stand-in makes its own
            os.makedirs(folder, exist_ok=True)
            return SQLiteStore(folder + "/store.sqlite3")"""))
    (tmp_path / "test_contract.py").write_text(recipe)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_contract.py"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    passed = re.search(r"(\d+) passed", result.stdout)
    assert result.returncode == 0 and passed and int(passed.group(1)) >= 50, result.stdout + result.stderr
