"""Every hook is documented (docstring and docs/plugins.md) and exercised by a test."""

import inspect
import pathlib

import pytest

from tbcoap import hookspecs

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOOKS = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("tbcoap_")]


def test_there_are_hooks():
    assert {"tbcoap_store_backends", "tbcoap_authenticate"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_one_line_docstring(hook):
    doc = getattr(hookspecs, hook).__doc__
    assert doc and doc.strip() and "\n" not in doc.strip()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    assert f"### {hook}\n" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_hookspecs.py"]
    assert any(f"def {hook}(" in source for source in sources), f"no test implements {hook}"
