"""Every hook is documented (docstring and docs/plugins.md) and exercised by a test."""

import inspect
import pathlib
import re

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
    """As datasette does: a test named after the hook, ``test_hook_<name>`` (the name without its
    ``tbcoap_`` prefix), that implements it."""
    name = hook.removeprefix("tbcoap_")
    named = [source for source in (p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
             if re.search(rf"^(async )?def test_hook_{name}\(", source, re.M)]
    assert named, f"no test is named test_hook_{name}"
    assert any(f"def {hook}(" in source for source in named), f"the file of test_hook_{name} implements no {hook}"
