"""The Lua scripts of the Redis store: each store call is one script, run atomically in Redis.

The scripts are the package's ``lua/*.lua`` files (package data), one per call and named after
it (``save_telemetry.lua`` is ``save_telemetry``); ``lua/prelude.lua`` goes before each.  Every
script gets the key prefix as ARGV[1]; keys are built inside (docs/redis.md has the layout).  A
script checks everything before its first write, so a refused call changes nothing.  Expected
refusals are returned as strings (``'DUPNAME'``, ``'NOTFOUND'``, ...) the store turns into
tbcoap errors.
"""

from importlib.resources import files

PRELUDE = "prelude.lua"
LIBRARIES = ("rollups.lua",)  # put after the prelude of a script beginning with '-- uses NAME'


def load(folder=None):
    """``{name: source}`` of every script in ``folder`` (the package's ``lua/``), prelude included."""
    folder = folder or files(__package__) / "lua"
    prelude = (folder / PRELUDE).read_text(encoding="utf-8")
    libraries = {name: (folder / name).read_text(encoding="utf-8") for name in LIBRARIES}
    scripts = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".lua") or entry.name == PRELUDE or entry.name in libraries:
            continue
        source = entry.read_text(encoding="utf-8")
        first = source.split("\n", 1)[0]
        used = libraries[first[len("-- uses "):].strip()] if first.startswith("-- uses ") else ""
        scripts[entry.name[: -len(".lua")]] = prelude + used + source
    return scripts


SCRIPTS = load()
