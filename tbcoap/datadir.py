"""The data directory shared by the service and the ``tbcoap`` command: where things are kept."""

import os

DEFAULT_DATA_DIR = "./tbcoap-data"
KEY_FILE = "admin.key"


def key_file(data_dir) -> str:
    """Where the generated REST admin key is kept."""
    return os.path.join(data_dir, KEY_FILE)
