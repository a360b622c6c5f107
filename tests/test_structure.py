"""The shape of the code: no import circles in ``tbcoap`` or the bundled plugins, and no module
over the size a newcomer can hold in mind (docs/design.md)."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"tbcoap": ROOT / "tbcoap", **{p.name: p for p in (ROOT / "plugins").iterdir() if p.is_dir()
                                         and (p / "__init__.py").exists()}}
MAX_LINES = 600
MAX_LINES_OF = {"tbcoap.coap.messagelayer": 450}
EXEMPT_FROM_SIZE = ("tbcoap.testing",)


def modules():
    """``{dotted name: path}`` of every module of tbcoap and the bundled plugins."""
    found = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name, path, known):
    """The known modules ``name`` imports, at any depth of its code (a function's import too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def circles(graph):
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    # a package importing its own submodules is its table of contents, not a circle
    for name in graph:
        graph[name] = {other for other in graph[name] if not name.startswith(other + ".")}
    assert circles(graph) == []


def test_no_module_over_its_size():
    over = {}
    for name, path in modules().items():
        if name.startswith(EXEMPT_FROM_SIZE):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES_OF.get(name, MAX_LINES):
            over[name] = lines
    assert over == {}


def test_the_cycle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


PUBLIC_PLUGIN_API = {"hookspecs", "interfaces", "models", "errors", "storekit", "rollupkit", "events", "latency", "metrics"}
MAY_IMPORT = {
    # layer: the other parts of tbcoap it may import (docs/design.md, "Who may import whom")
    "coap": {"ratelimit"},
    "deviceapi": {"coap", "services", "payloads", "models", "errors", "events", "redact"},
    "services": {"payloads", "models", "errors", "events", "plugins", "storekit"},
    "payloads": {"models", "errors"},
    "rest": {"services", "payloads", "models", "errors", "redact", "storekit", "datadir", "web", "tbcoap"},
    "cli": {"datadir", "tbcoap"},
    "web": set(),
    "websocket": {"rest", "services", "models", "errors", "events"},
}


def layer_of(name):
    parts = name.split(".")
    if parts[0] != "tbcoap":
        return f"plugin {parts[0]}"
    return parts[1] if len(parts) > 1 else "tbcoap"


def test_who_may_import_whom():
    """The layers point one way: the message layer knows no ThingsBoard, the services no CoAP or
    HTTP, REST and the CLI no message layer, and the bundled plugins only the public plugin API."""
    known = modules()
    wrong = []
    for name, path in known.items():
        mine = layer_of(name)
        for other in imports_of(name, path, known):
            theirs = layer_of(other)
            if theirs == mine:
                continue
            if mine.startswith("plugin "):
                allowed = theirs in PUBLIC_PLUGIN_API  # never another plugin, nor tbcoap's inside
            else:
                allowed = theirs in MAY_IMPORT.get(mine, {theirs})
            if not allowed:
                wrong.append(f"{name} imports {other}")
    assert wrong == []
