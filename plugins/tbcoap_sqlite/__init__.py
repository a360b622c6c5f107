"""The bundled SQLite store, chosen with ``--store sqlite://...``.

``sqlite:///abs/file.sqlite3`` is an absolute path, ``sqlite://rel/file``
one relative to the working directory, and ``sqlite://`` alone means
``<data-dir>/tbcoap.sqlite3``.  Settings used: ``data-dir`` and ``sync``
(``normal``: a commit survives a killed process; ``full``: also a power loss).
"""

import os
from urllib.parse import unquote

from tbcoap.hookspecs import StoreBackend, hookimpl

from .store import SQLiteStore

PREFIX = "sqlite://"
DEFAULT_DATA_DIR = "./tbcoap-data"
DEFAULT_FILE = "tbcoap.sqlite3"


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
        path = os.path.join(settings.get("data-dir") or DEFAULT_DATA_DIR, DEFAULT_FILE)
    if ":memory:" in path or path.startswith("file:"):
        raise ValueError(f"the sqlite store needs a file path, not {url!r} (in memory, all data would be lost)")
    if path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise ValueError(f"the sqlite store URL names a directory, not a file: {url!r}")
    return os.path.abspath(path)


def make_store(url, settings):
    """Build an unopened SQLiteStore for ``url``; ``settings`` is the option mapping."""
    settings = settings or {}
    sync = str(settings.get("sync") or "normal").lower()
    if sync not in ("normal", "full"):
        raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
    path = database_path(url, settings)
    folder = os.path.dirname(path)
    try:  # here, so that a path that cannot be used stops the start with a clear error
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write in {folder}")
    return SQLiteStore(path, sync=sync)


@hookimpl
def tbcoap_store_backends():
    """Offer the ``sqlite`` scheme."""
    return StoreBackend(
        scheme="sqlite",
        factory=make_store,
        description="SQLite file in WAL mode with group commit (bundled, the default)",
    )
