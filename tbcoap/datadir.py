"""The data directory shared by the service and the ``tbcoap`` command: where things are kept,
who may read them (0700 and 0600, whatever the umask), and one node at a time."""

import fcntl
import os

DEFAULT_DATA_DIR = "./tbcoap-data"
KEY_FILE = "admin.key"
LOCK_FILE = "tbcoap.lock"
BACKUP_PREFIX = ".backup-"


class DataDirBusy(Exception):
    """Another node holds the data directory's lock."""


def key_file(data_dir) -> str:
    """Where the generated REST admin key is kept."""
    return os.path.join(data_dir, KEY_FILE)


def ensure(data_dir) -> str:
    """Create the data directory (mode 0700) if it is missing; its path."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    return data_dir


def backup_path(data_dir) -> str:
    """A new name for a backup's snapshot while it is sent (removed afterwards)."""
    import uuid
    return os.path.join(data_dir, f"{BACKUP_PREFIX}{uuid.uuid4().hex}.part")


def remove(path):
    """Remove a file of the data directory if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_stale_backups(data_dir) -> int:
    """Remove snapshots a node that ended while sending one left behind; how many went."""
    removed = 0
    for name in os.listdir(data_dir):
        if name.startswith(BACKUP_PREFIX) and name.endswith(".part"):
            try:
                os.unlink(os.path.join(data_dir, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


class Lock:
    """An exclusive lock on the data directory, held until ``release`` or the process ends.

    The lock is ``flock`` on ``tbcoap.lock``: the kernel drops it when the process dies, so a
    killed node leaves nothing stale.  Processes forked after it is taken (a node's workers)
    share it.
    """

    def __init__(self, data_dir):
        ensure(data_dir)
        self.path = os.path.join(data_dir, LOCK_FILE)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(f"another tbcoap node (pid {holder}) is using the data directory "
                              f"{os.path.abspath(data_dir)}; stop it, or give this one its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self):
        """Let another node use the directory."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
