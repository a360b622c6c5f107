"""The bundled SQLite store, chosen with ``--store sqlite://...`` (the default store).

``sqlite:///abs/file.sqlite3`` is an absolute path, ``sqlite://rel/file`` one relative to the
working directory, and ``sqlite://`` alone (the default ``--store``) the plugin's ``path``
setting, else ``<data-dir>/tbcoap.sqlite3``.  The folder of a path that is given must exist: the
node creates its data directory, nothing else.  Settings (``[plugins.sqlite]``,
``--plugin-option sqlite.KEY=VALUE``): ``sync`` (``normal``: a commit survives a killed
process; ``full``: also a power loss; ``--sync`` is an alias) and ``path``.
"""

import os
from urllib.parse import unquote

from tbcoap.hookspecs import Setting, StoreBackend, hookimpl

from .database import SYNC_MODES, check_sync
from .store import SQLiteStore

NAME = "sqlite"  # the plugin's name (its entry point): its settings are settings["plugins"]["sqlite"]
PREFIX = "sqlite://"
DEFAULT_DATA_DIR = "./tbcoap-data"
DEFAULT_FILE = "tbcoap.sqlite3"


def own_settings(settings):
    """This plugin's validated settings from the node's option mapping (defaults where absent)."""
    own = ((settings or {}).get("plugins") or {}).get(NAME) or {}
    return {"sync": own.get("sync") or "normal", "path": own.get("path")}


def database_path(url, settings):
    """The absolute file path a ``sqlite://`` URL names (ValueError if it names none)."""
    if not isinstance(url, str) or url[: len(PREFIX)].lower() != PREFIX:
        raise ValueError(
            f"not a sqlite store URL: {url!r} (use sqlite:///abs/path, sqlite://rel/path or sqlite://)"
        )
    rest = url[len(PREFIX):]
    if "?" in rest or "#" in rest:
        raise ValueError(f"a sqlite store URL takes no query or fragment: {url!r}")
    path = unquote(rest)
    if path.startswith("//"):  # SQLAlchemy's sqlite:////abs form
        path = "/" + path.lstrip("/")
    if not path:
        path = own_settings(settings)["path"] or _in_data_dir(settings)
    if ":memory:" in path or path.startswith("file:"):
        raise ValueError(f"the sqlite store needs a file path, not {url!r} (in memory, all data would be lost)")
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ValueError(f"the sqlite store URL names a directory, not a file: {url!r}")
    return os.path.abspath(path)


def _in_data_dir(settings):
    return os.path.join((settings or {}).get("data-dir") or DEFAULT_DATA_DIR, DEFAULT_FILE)


def make_store(url, settings):
    """An unopened SQLiteStore for ``url``; ``settings`` is the node's option mapping.

    ValueError (the start stops with it) for a URL that names no usable file: the folder of a
    file that is given must exist and be writable; only the data directory (the default file's)
    may be missing, as the node creates it before the store opens.
    """
    own = own_settings(settings)
    path = database_path(url, settings)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        if path == os.path.abspath(_in_data_dir(settings)) and not os.path.exists(folder):
            return SQLiteStore(path, sync=own["sync"])  # the node creates its data directory first
        missing = "is not a directory" if os.path.exists(folder) else "does not exist"
        raise ValueError(f"cannot create {path}: the folder {folder} {missing} "
                         "(tbcoap creates only its data directory; check the path, or create the folder)")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write in {folder}")
    return SQLiteStore(path, sync=own["sync"])


@hookimpl
def tbcoap_plugin_settings():
    """``sync`` and ``path``: how durable a commit is, and the file ``sqlite://`` names."""
    return [
        Setting("sync", str, "normal", check=check_sync,
                help=f"{' or '.join(SYNC_MODES)}: normal: a commit survives a killed process; full: also a "
                     "power loss (an fsync per commit); --sync is an alias"),
        Setting("path", str, None,
                help="the file of --store sqlite:// (default <data-dir>/tbcoap.sqlite3); its folder must exist"),
    ]


@hookimpl
def tbcoap_store_backends():
    """Offer the ``sqlite`` scheme."""
    return StoreBackend(
        scheme="sqlite",
        factory=make_store,
        description="SQLite file in WAL mode with group commit (bundled, the default)",
    )
